"""The README opens with the two commands, and CI runs exactly the second one."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_readme_opens_with_setup_and_test_commands_and_ci_runs_the_test_one():
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)\n```", readme, re.S)
    run_cmd, test_cmd = blocks[0].strip(), blocks[1].strip()
    assert readme.index(run_cmd) < 600  # the first thing a reader sees
    assert run_cmd.endswith("cardbench run") and "pip install" in run_cmd
    assert "pytest" in test_cmd and ".[test]" in test_cmd
    assert test_cmd in (REPO / ".ci" / "run").read_text().splitlines()


def test_the_readme_s_python_imports_exist():
    """Every `from X import Y` in the README's Python blocks imports (the installed name
    `cardbench` is this checkout's `bench`)."""
    import importlib

    readme = (REPO / "README.md").read_text()
    imports = re.findall(r"^from (\S+) import (\w+)", "\n".join(re.findall(r"```python\n(.*?)\n```", readme, re.S)),
                         re.M)
    assert imports
    for module, name in imports:
        local = re.sub(r"^cardbench\b", "bench", module)
        assert hasattr(importlib.import_module(local), name), f"from {module} import {name}"


def test_the_readme_s_cpu_mode_outputs_open_with_what_cardbench_prints_today():
    import torch

    from bench.commands.run_output import first_line
    from bench.core.devices import Target

    banner = first_line([Target(torch.device("cpu"), None, {})], True)
    outputs = re.findall(r"```\n(cardbench: CPU mode[^\n]*)\n", (REPO / "README.md").read_text())
    assert len(outputs) >= 2 and set(outputs) == {banner}
