"""torch reference ops and byte accounting for the memory kernels; also the suite's "torch" provider.

No Triton import here, so the torch provider runs where Triton is not installed.
"""
import torch

PATTERNS = ("read", "write", "copy", "triad")
ARRAYS = {"read": 1, "write": 1, "copy": 2, "triad": 3}  # arrays each pattern touches
# Explicit reads + writes per fp32 element, STREAM's convention: no write-allocate term
# (https://www.cs.virginia.edu/stream/ref.html, "counting bytes"; BabelStream counts the same way),
# since GPU streaming stores need no read-for-ownership.
BYTES_PER_ELEMENT_MOVED = {"read": 4, "write": 4, "copy": 8, "triad": 12}


def torch_read(x: torch.Tensor) -> torch.Tensor:
    """Reads every element once (a reduction into one fp32 scalar)."""
    return x.sum()


def torch_write(out: torch.Tensor, value: float) -> None:
    out.fill_(value)


def torch_copy(src: torch.Tensor, dst: torch.Tensor) -> None:
    # Same-device contiguous copy_ goes through cudaMemcpyAsync (copy_kernel_cuda in
    # https://github.com/pytorch/pytorch/blob/main/aten/src/ATen/native/cuda/Copy.cu):
    # the path users get from the framework.
    dst.copy_(src)


def torch_triad(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, scalar: float) -> None:
    """a = b + scalar * c, in one kernel."""
    torch.add(b, c, alpha=scalar, out=a)
