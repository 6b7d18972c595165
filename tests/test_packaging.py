"""The wheel installs one import name of ours (cardbench), and everything works from it.

`bench` and `kernels` are the repository's folders; both names are other PyPI packages
(`kernels` is Hugging Face's compute-kernel loader), so installing them as top-level
packages could overwrite another package's files. The wheel maps them to `cardbench` and
`cardbench.kernels`; the commands, `python -m cardbench` and the pytest front end must
work from it, away from the checkout.
"""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    args = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)]
    try:
        import setuptools

        if int(setuptools.__version__.split(".")[0]) >= 64:  # what pyproject.toml's build needs: build offline
            args.insert(4, "--no-build-isolation")
    except ImportError:
        pass
    subprocess.run(args, check=True, capture_output=True, timeout=300)
    (path,) = out.glob("cardbench-*.whl")
    return path


@pytest.fixture(scope="module")
def site(wheel, tmp_path_factory) -> Path:
    """The wheel unpacked as an installer would lay it out in site-packages."""
    where = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(where)
    return where


def run(site: Path, cwd: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Python with the unpacked wheel on its path and the checkout nowhere near (cwd is elsewhere)."""
    env = dict(os.environ, PYTHONPATH=str(site), CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_wheel_holds_no_top_level_name_but_ours(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"cardbench", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    for data in ("cardbench/core/specs.toml", "cardbench/commands/policy.toml", "cardbench/commands/models.toml",
                 "cardbench/kernels/memory.py", "cardbench/kernels/matmul.py", "cardbench/pytest_plugin.py"):
        assert data in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "cardbench = cardbench.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_the_commands_run_from_the_wheel(site, tmp_path):
    found = run(site, tmp_path, "-c", "import cardbench, cardbench.kernels.memory as k, cardbench.core.results as r; "
                                       "print(cardbench.__file__); print(k.__file__)")
    assert found.returncode == 0, found.stderr
    assert all(line.startswith(str(site)) for line in found.stdout.split())  # not the checkout's folders
    assert run(site, tmp_path, "-c", "import bench").returncode != 0  # no top-level `bench` from us
    specs = run(site, tmp_path, "-m", "cardbench", "specs", "H100 SXM5 80GB")
    assert specs.returncode == 0 and "memory_bandwidth" in specs.stdout, specs.stderr
    out = tmp_path / "results"
    one = run(site, tmp_path, "-m", "cardbench", "run", "--device", "cpu", "--case", "memory/copy/torch/plateau",
              "--out", str(out))
    assert one.returncode == 0, one.stderr[-2000:]
    assert "memory/copy" in one.stdout and len(list(out.glob("*.csv"))) == 1


def test_the_pytest_front_end_runs_from_the_wheel(site, tmp_path):
    p = run(site, tmp_path, "-m", "pytest", "-p", "cardbench.pytest_plugin", "--pyargs", "cardbench",
            "--cardbench-device", "cpu", "-k", "test_memory and torch and copy", "-q", "-p", "no:cacheprovider",
            "--benchmark-disable")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "1 passed" in p.stdout


def test_the_checkout_install_gives_the_command_and_the_module():
    exe = Path(sys.executable).with_name("cardbench")
    if not exe.exists():
        pytest.skip("cardbench is not installed next to this Python (the README installs it with pip -e .)")
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=120)
    assert version.returncode == 0 and version.stdout.startswith("cardbench ")
    module = subprocess.run([sys.executable, "-m", "cardbench", "--version"], capture_output=True, text=True,
                            timeout=120, cwd=REPO.parent)
    assert module.returncode == 0 and module.stdout == version.stdout
