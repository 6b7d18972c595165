"""The command line as a shell user meets it: a pipe that closes early, the version, the case list."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def cardbench(*args, **kw):
    env = dict(os.environ, PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
    return subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kw)


def test_output_piped_into_head_ends_quietly():
    """`cardbench specs --json | head -c 200`: the reader goes away; no BrokenPipeError traceback, exit 0."""
    p = cardbench("specs", "--json")
    first = p.stdout.read(200)
    p.stdout.close()  # what head does once it has its lines
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 0 and first.startswith(b"{") and "Traceback" not in err and "BrokenPipe" not in err


def test_version():
    p = cardbench("--version")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0 and out.decode().startswith("cardbench "), err


def test_list_names_every_case_and_why_it_would_not_run_here(tmp_path):
    p = cardbench("run", "--device", "cpu", "--families", "memory,transfer", "--list", "--out", str(tmp_path / "r"))
    out, err = p.communicate(timeout=120)
    lines = out.decode().splitlines()
    assert p.returncode == 0, err
    assert "memory/copy/torch/plateau  cpu  runs" in lines
    assert ("memory/copy/triton/plateau  cpu  skipped: Triton kernels are not timed on the CPU "
            "(the tests check them under TRITON_INTERPRET=1)") in lines
    assert any(line.startswith("transfer/h2d/torch/pinned-256MiB  cpu  skipped: CPU mode") for line in lines)
    assert not (tmp_path / "r").exists()  # --list measures nothing and writes no file


def test_case_globs_pick_cases_and_a_glob_that_matches_none_is_bad_input(tmp_path):
    p = cardbench("run", "--device", "cpu", "--case", "memory/*/torch/plateau", "--case", "memory/copy/triton/*",
                  "--out", str(tmp_path))
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err.decode()[-2000:]
    from bench.core.results import read_results

    (csv,) = tmp_path.glob("*.csv")
    rows = read_results(csv).rows
    assert sorted((r["benchmark"], r["provider"]) for r in rows) == sorted(
        [(b, "torch") for b in ("read", "write", "copy", "triad")] + [("copy", "triton")])
    none = cardbench("run", "--device", "cpu", "--case", "memroy/*", "--out", str(tmp_path / "none"))
    _, err = none.communicate(timeout=120)
    assert none.returncode == 2 and "no case matches memroy/*" in err.decode()
    assert not (tmp_path / "none").exists()
