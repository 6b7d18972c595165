"""cardbench: GPU micro-benchmarks normalized against the spec sheet.

Installed, this package is `cardbench` and its Triton kernels are `cardbench.kernels`
(setuptools' package-dir maps the repository's `bench/` and `kernels/` folders there, so
the wheel adds no top-level name but ours). In a checkout run without installing
(`PYTHONPATH=. python -m bench`), `kernels/` sits beside `bench/`: it is mounted here as
the same sub-package, so the code imports `from ..kernels import ...` either way.
"""
import importlib.util
import sys
from pathlib import Path


def _mount_kernels() -> None:
    name = f"{__name__}.kernels"
    here = Path(__file__).resolve().parent
    if name in sys.modules or (here / "kernels" / "__init__.py").exists():
        return  # installed: setuptools put the kernels inside this package
    folder = here.parent / "kernels"
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py", submodule_search_locations=[str(folder)])
    if spec is None or not (folder / "__init__.py").exists():
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    globals()["kernels"] = module


_mount_kernels()
