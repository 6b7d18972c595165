"""What NVML read on several devices while a family timed its own work: telemetry, the PCIe link, replays.

The harness samples one device around the work it times itself; a family that times
copies between devices (bench/families/transfer*.py) observes every device the copy
touches, with the link read during the copy (an idle link trains down to Gen1).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import nvml, telemetry, topology


@dataclass
class Window:
    """What was read around a timed window."""

    telemetry: dict[int, dict]  # device -> Sampler summary
    link: dict[int, tuple]  # device -> (gen, width, readings) of the PCIe link during the window
    replays: dict[int, int | None]  # device -> PCIe replays counted during the window


def observe(devices: list[int], fn: Callable[[], object]):
    """Run fn with telemetry, the PCIe link and the replay counter read on `devices` during it."""
    nv = nvml.module()
    handles = [nvml.handle(d) for d in devices]

    def replays():
        return [nvml.call("nvmlDeviceGetPcieReplayCounter", h, nv=nv) if h is not None else None for h in handles]
    before = replays()
    samplers = [telemetry.Sampler(d) for d in devices]
    with topology.LinkSampler(nv, handles) as links:
        for s in samplers:
            s.__enter__()
        try:
            result = fn()
        finally:
            for s in samplers:
                s.__exit__(None, None, None)
    after = replays()
    window = Window(
        telemetry={d: s.summary() for d, s in zip(devices, samplers)},
        link={d: links.result(i) for i, d in enumerate(devices)},
        replays={d: (a - b) if isinstance(a, int) and isinstance(b, int) else None
                 for d, a, b in zip(devices, after, before)})
    return result, window
