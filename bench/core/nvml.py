"""The one way into NVML (nvidia-ml-py): the binding, initialised once, and every call through `call`.

Every call returns None when there is no driver or NVML, when the binding lacks the
function, or when it raises (NotSupported on consumer boards, for example), so CPU mode
and every board run the same code. NVML and never `nvidia-smi`: its text output "is not
guaranteed to be backwards compatible" (nvidia-smi(1), https://docs.nvidia.com/deploy/nvidia-smi/).
Tests install a fake binding in `_module` (and reset `_state`).
"""
from __future__ import annotations

import os
import threading

_module = None  # the pynvml module in use; tests put a fake module here (and reset _state)
_state = None  # None: nvmlInit not tried yet, True: initialised, False: unavailable
_init_lock = threading.Lock()


def module():
    """The initialised NVML binding or None; nvmlInit runs once per process, on first use."""
    global _module, _state
    with _init_lock:
        if _state is None:
            _state = False
            try:
                if _module is None:
                    import pynvml
                    _module = pynvml
                _module.nvmlInit()
                _state = True
            except Exception:  # no library, no driver, driver/library mismatch: all mean "no NVML"
                pass
        return _module if _state else None


def available() -> bool:
    return module() is not None


def call(name: str, *args, nv=None):
    """One NVML call (on `nv`, a binding a caller holds, else the process's); None when it cannot answer."""
    fn = getattr(nv if nv is not None else module(), name, None)
    if fn is None:
        return None
    try:
        return fn(*args)
    except Exception:  # one unsupported field must not cost the others
        return None


def first(names: tuple[str, ...], *args):
    """The first of several equivalent NVML calls (new name, then deprecated one) that answers."""
    for name in names:
        value = call(name, *args)
        if value is not None:
            return value
    return None


def torch_props(index: int):
    """torch's properties of CUDA device `index`, or None (CPU-only torch, no GPU, bad index)."""
    try:
        import torch
        if not torch.cuda.is_available():
            return None
        return torch.cuda.get_device_properties(index)
    except Exception:
        return None


def torch_bus_id(props) -> str:
    """NVML-style bus id ("00000000:19:00.0") from torch's pci_* properties (absent in old torch)."""
    try:  # torch's pci_device_id is the PCI slot number, not NVML's vendor/device id
        return f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0"
    except Exception:
        return ""


def device_handle(index: int, props=None) -> tuple[object | None, str]:
    """NVML handle of CUDA device `index`, and how it was found.

    How: "uuid", "pci_bus_id", "cuda_visible_devices", "index", or "" without a handle. CUDA
    indices follow CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER (fastest first by default)
    while NVML indexes every GPU in PCI order, so the PCI bus id that torch reports is
    the only mapping that is always right; the others are fallbacks.
    """
    uuid = str(getattr(props, "uuid", "") or "") if props is not None else ""
    if uuid:  # torch >= 2.2: the card's UUID, exact whatever the ordering ("GPU-" prefix in NVML)
        handle = call("nvmlDeviceGetHandleByUUID", uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")
        if handle is not None:
            return handle, "uuid"
    bus_id = torch_bus_id(props) if props is not None else ""
    if bus_id:
        handle = call("nvmlDeviceGetHandleByPciBusId", bus_id)
        if handle is not None:
            return handle, "pci_bus_id"
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if index < len(visible):
        entry = visible[index]
        # An integer entry is a CUDA index, equal to NVML's only under CUDA_DEVICE_ORDER=PCI_BUS_ID
        # or on identical cards; a full UUID is exact.
        handle = (call("nvmlDeviceGetHandleByIndex", int(entry)) if entry.isdigit()
                  else call("nvmlDeviceGetHandleByUUID", entry))
        if handle is not None:
            return handle, "cuda_visible_devices"
    handle = call("nvmlDeviceGetHandleByIndex", index)
    return handle, ("index" if handle is not None else "")


def handle(index: int | None):
    """The NVML handle of CUDA device `index` (mapped by UUID / PCI bus id), or None."""
    if index is None or module() is None:
        return None
    return device_handle(index, torch_props(index))[0]
