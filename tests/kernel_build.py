"""Build the Triton kernels for real GPU targets on a machine without a GPU, and read what came out.

Triton compiles for any target once its active driver names one: a stand-in driver answers
`get_current_target` with the target and nothing else is asked of it, since the JIT's
`warmup` compiles without launching. The launchers in kernels/ run unchanged, on meta tensors
(shapes, strides and dtypes without storage) of the sizes the benchmark uses, with the kernel
swapped for a stand-in whose launch compiles instead; so what is built is exactly what the
benchmark would launch, specialization included (16-byte divisible sizes and strides, unit
strides). The PTX and cubin come back, with the dynamic shared memory (Triton's metadata
`shared`), and registers and stack frame from `cuobjdump -res-usage` on the cubin: Triton's own
`n_spills` is the stack frame size over 4, read from the driver after loading, which needs a GPU.

Works with Triton 3.6 (the GPU image) and 3.9; APIs are looked up at run time.
"""
from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

# The targets CI builds for, and the instruction each one's tl.dot lowers to.
CAPABILITIES = ((9, 0), (10, 0), (12, 0))
DOT_MMA = {9: "wgmma.mma_async", 10: "tcgen05.mma", 12: "mma.sync"}
SM_COUNT = 132  # any count: it only sets the persistent grid, not the compiled code


@dataclass
class Build:
    kernel: str  # "matmul/bf16", "matmul/mxfp4", "memory/copy", ...
    capability: tuple[int, int]
    label: str  # the configuration's label
    compiled: object  # Triton's CompiledKernel: .asm["ptx"], .asm["cubin"], .metadata
    shared: int  # bytes of dynamic shared memory per block
    regs: int  # registers per thread
    stack: int  # bytes of local-memory stack frame per thread (spills)
    seconds: float

    @property
    def ptx(self) -> str:
        return self.compiled.asm["ptx"]


def missing() -> str | None:
    """What this machine lacks to build offline, or None."""
    try:
        import triton
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.runtime.driver import driver
    except ImportError as e:
        return f"triton with the CUDA backend is not installed ({e})"
    if not hasattr(driver, "set_active"):
        return f"this triton ({triton.__version__}) cannot be given a driver (no driver.set_active)"
    if not hasattr(triton.JITFunction, "warmup"):
        return f"this triton ({triton.__version__}) has no JITFunction.warmup"
    if _tool("cuobjdump") is None:
        return "no cuobjdump in this triton's package (needed to read registers and spills from a cubin)"
    return None


def _tool(name: str) -> str | None:
    try:
        from triton import knobs

        path = getattr(knobs.nvidia, name).path
    except (ImportError, AttributeError, RuntimeError):
        import triton

        path = str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)
    return path if path and Path(path).exists() else shutil.which(name)


class _OfflineDriver:
    """The part of Triton's driver interface that compiling without launching asks for."""

    def __init__(self, capability: tuple[int, int]):
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", capability[0] * 10 + capability[1], 32)

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return f"offline-sm{self.target.arch}"  # its own JIT cache, apart from any real device's

    def get_current_stream(self, device=None):
        return 0

    def get_active_torch_device(self):
        return torch.device("meta")


@contextlib.contextmanager
def offline_target(capability: tuple[int, int]):
    """Within: Triton compiles for `capability`. The active driver is restored afterwards."""
    from triton.runtime.driver import driver

    before = getattr(driver, "_active", None)
    driver.set_active(_OfflineDriver(capability))
    try:
        yield
    finally:
        if hasattr(driver, "_active"):
            driver._active = before
        else:
            driver.reset_active()


@contextlib.contextmanager
def _compiling(module, name: str):
    """Replace module.name (a @triton.jit kernel) by one whose launch compiles; yields the builds."""
    real = getattr(module, name)
    built: list = []

    class Launch:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                built.append(real.warmup(*args, grid=grid, **kwargs))
                return built[-1]
            return launch

    setattr(module, name, Launch())
    try:
        yield built
    finally:
        setattr(module, name, real)


def _meta(*shape: int, dtype=torch.float32) -> torch.Tensor:
    return torch.empty(*shape, dtype=dtype, device="meta")


def _matmul_launch(recipe: str, config):
    """(module, kernel name, launch()) for the benchmark's first GEMM shape, laid out as it does."""
    from bench.families.matmul import GPU_SHAPES
    from bench.kernels import matmul as km

    m, n, k = GPU_SHAPES[0]
    if recipe == "mxfp4":  # A (M, K/2), B (N, K/2) packed e2m1; scales (rows, K/32) e8m0
        u8 = torch.uint8
        a, b, sa, sb = _meta(m, k // 2, dtype=u8), _meta(n, k // 2, dtype=u8), _meta(m, k // 32, dtype=u8), \
            _meta(n, k // 32, dtype=u8)
        c = _meta(m, n, dtype=torch.bfloat16)
        return km, "_mxfp4_kernel", lambda: km.triton_mxfp4_matmul(a, sa, b, sb, c, config)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp8": torch.float8_e4m3fn}[recipe]
    a, w = _meta(m, k, dtype=dtype), _meta(n, k, dtype=dtype)  # B = w.t(): column-major (K, N)
    c = _meta(m, n, dtype=torch.float16 if recipe == "fp16" else torch.bfloat16)
    scale = 1.0 if recipe == "fp8" else None
    return km, "_matmul_kernel", lambda: km.triton_matmul(a, w.t(), c, config, scale)


def _memory_launch(pattern: str, config):
    from bench.families.memory import ELEMENT_BYTES, GPU_PLATEAU_MIN
    from bench.kernels import memory as km

    n = GPU_PLATEAU_MIN // ELEMENT_BYTES
    x, y, z = _meta(n), _meta(n), _meta(n)
    name = f"_{pattern}_kernel"
    if pattern == "read":
        partials = _meta(km.read_partials_len(n, config, SM_COUNT))
        return km, name, lambda: km.triton_read(x, partials, config, SM_COUNT)
    if pattern == "write":
        return km, name, lambda: km.triton_write(x, 0.5, config, SM_COUNT)
    if pattern == "copy":
        return km, name, lambda: km.triton_copy(x, y, config, SM_COUNT)
    return km, name, lambda: km.triton_triad(x, y, z, 0.5, config, SM_COUNT)


def build(kernel: str, config, capability: tuple[int, int]) -> Build:
    """Compile `kernel` ("matmul/<recipe>" or "memory/<pattern>") under `config` for `capability`."""
    family, what = kernel.split("/")
    module, name, launch = (_matmul_launch if family == "matmul" else _memory_launch)(what, config)
    started = time.perf_counter()
    with offline_target(capability), _compiling(module, name) as built:
        launch()
    compiled = built[-1]
    regs, stack = resource_usage(compiled.asm["cubin"])
    return Build(kernel, capability, config.label(), compiled, int(compiled.metadata.shared), regs, stack,
                 time.perf_counter() - started)


def resource_usage(cubin: bytes) -> tuple[int, int]:
    """(registers per thread, stack frame bytes) of the one kernel in `cubin`, from cuobjdump."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([_tool("cuobjdump"), "-res-usage", f.name], capture_output=True, text=True, timeout=60)
    found = re.search(r"REG:(\d+)\s+STACK:(\d+)", out.stdout)
    if found is None:
        raise RuntimeError(f"cuobjdump -res-usage printed no REG/STACK: {out.stdout[-500:]} {out.stderr[-500:]}")
    return int(found.group(1)), int(found.group(2))


def mma_instructions(ptx: str) -> Counter:
    """Matrix-multiply instructions in `ptx`, counted by full name (shape, kind and types)."""
    return Counter(m.group(0) for m in re.finditer(r"\b(?:wgmma\.mma_async|tcgen05\.mma|mma\.sync)[\w.:]*", ptx))


def global_accesses(ptx: str) -> list[str]:
    """Global load and store instructions in `ptx`, e.g. 'ld.global.L1::evict_first.L2::cache_hint.v4.b32'."""
    return [m.group(0) for m in re.finditer(r"\b(?:ld|st)\.global[\w.:]*", ptx)]


def access_widths(accesses: list[str]) -> Counter:
    """Counts by ("ld" | "st", "v4" | "v2" | "scalar")."""
    return Counter((a[:2], "v4" if ".v4." in a else "v2" if ".v2." in a else "scalar") for a in accesses)


def unavailable(capability: tuple[int, int]) -> str | None:
    """Why this Triton cannot build for `capability` (its ptxas too old, say), or None."""
    if capability not in _UNAVAILABLE:
        from bench.kernels import memory as km

        try:
            build("memory/write", km.Config(1024, 4, 0, False), capability)
            _UNAVAILABLE[capability] = None
        except Exception as e:  # noqa: BLE001 - whatever it is, it names the missing piece
            import triton

            _UNAVAILABLE[capability] = (f"triton {triton.__version__} cannot build for compute capability "
                                        f"{capability[0]}.{capability[1]}: {type(e).__name__}: {str(e)[:400]}")
    return _UNAVAILABLE[capability]


_UNAVAILABLE: dict = {}
