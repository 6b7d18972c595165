"""A virtual CUDA device: a model of torch.cuda that cardbench's device timers run against on the CPU.

The timers (bench/core/timing.py: one stream, two streams, per rank) are written against
torch.cuda's API. Tests put an instance of `VirtualCuda` where they look for
`torch.cuda` and its `clock` where they look for `time.perf_counter`, then assert on
what the timers measure and on how much device time they spend. Time is virtual:
nothing sleeps, and a run of minutes of modelled device time takes milliseconds.

The model and its assumptions:

- **One host thread, one virtual clock** (`now`, seconds). Every host call that
  enqueues a command costs host time: `launch_s` for a kernel or a copy (5-30 us on
  real systems), `record_s` for an event record or a stream wait. Blocking calls
  (`synchronize`, a full queue) move the clock forward to the moment they return.
- **Streams are FIFO queues** on one device. A command can start when it has been
  submitted, when the command before it on its stream has ended and when what it
  waits for (an event, a copy engine) is free. Its start and end are known when it is
  enqueued: the device never runs ahead of what the host submitted.
- **The launch queue is bounded**: at most `queue_depth` commands (of every stream)
  may be pending, submitted and not yet ended (CUDA's is about a thousand). Enqueuing
  one more blocks the host until the oldest pending one retires.
- **Kernels on different streams run concurrently** at their full modelled speed (no
  sharing of SMs is modelled); **copies** run on two copy engines, one per direction
  (host to device, device to host), so a copy waits for the previous copy of its
  direction, from whichever stream, and the two directions overlap.
- **Events are stamped when the device reaches them**, rounded down to
  `event_resolution_s` (0.5 us, as cudaEventElapsedTime). `elapsed_time` on an event
  the device has not reached yet raises, as CUDA's cudaErrorNotReady does.
- **`_sleep(cycles)`** spins for cycles / `sm_clock_hz` seconds: the spin kernel's
  duration depends on the clock the card really runs at.
- **L2 state**: `flush()` enqueues a kernel that leaves the L2 cold; the next kernel
  made with a `cold_s` duration runs that long, later ones the warm duration.
- **Ctrl-C**: `interrupt_at(t)` raises KeyboardInterrupt from the first host call that
  returns at or after `t`; a blocking call returns first (a signal reaches Python only
  once the C call it interrupted has returned).

`log` keeps every executed kernel and copy (`Command`) so tests can assert what ran
when: which work ran cold, how much device time a case spent, when copies started.
"""
from __future__ import annotations

import contextlib
import heapq
import math
import types
from dataclasses import dataclass


@dataclass
class Command:
    kind: str  # "kernel", "copy", "sleep", "flush", "event", "wait"
    label: str
    stream: "Stream"
    submit: float
    start: float
    end: float
    cold: bool = False  # a kernel that ran on a cold L2


class Stream:
    def __init__(self, cuda: "VirtualCuda", device=None, name: str = ""):
        self.cuda, self.device, self.name = cuda, device, name or f"stream{len(cuda.streams)}"
        self.tail = 0.0  # when the last command enqueued on this stream ends
        cuda.streams.append(self)

    def synchronize(self) -> None:
        self.cuda._block_until(self.tail)

    def query(self) -> bool:
        return self.cuda.now >= self.tail

    def wait_event(self, event: "Event") -> None:
        self.cuda._enqueue(self, "wait", "wait_event", 0.0, after=event.time if event.time is not None else 0.0)

    def wait_stream(self, other: "Stream") -> None:
        self.cuda._enqueue(self, "wait", "wait_stream", 0.0, after=other.tail)

    def __repr__(self) -> str:
        return f"<virtual {self.name}>"


class Event:
    def __init__(self, cuda: "VirtualCuda", enable_timing: bool = False):
        self.cuda, self.enable_timing = cuda, enable_timing
        self.time: float | None = None  # when the device reaches it (unrounded)

    def record(self, stream: Stream | None = None) -> None:
        command = self.cuda._enqueue(stream or self.cuda.current_stream(), "event", "record", 0.0)
        self.time = command.end

    def query(self) -> bool:
        return self.time is None or self.cuda.now >= self.time

    def synchronize(self) -> None:
        if self.time is not None:
            self.cuda._block_until(self.time)

    def elapsed_time(self, end: "Event") -> float:
        """Milliseconds between two reached events, each stamped at the event resolution."""
        if not (self.enable_timing and end.enable_timing):
            raise RuntimeError("elapsed_time needs two events created with enable_timing=True")
        if self.time is None or end.time is None:
            raise RuntimeError("elapsed_time on an event that was never recorded")
        if self.cuda.now < max(self.time, end.time):
            raise RuntimeError("device not ready: the event has not been reached (no synchronize before reading it)")
        res = self.cuda.event_resolution_s
        return (math.floor(end.time / res) - math.floor(self.time / res)) * res * 1e3


class VirtualCuda:
    """The torch.cuda subset cardbench's timers use, over a modelled device (see the module docstring)."""

    def __init__(self, launch_s: float = 10e-6, sm_clock_hz: float = 1.98e9, queue_depth: int = 1024,
                 record_s: float | None = None, event_resolution_s: float = 0.5e-6, devices: int = 1):
        self.launch_s, self.sm_clock_hz, self.queue_depth = launch_s, sm_clock_hz, queue_depth
        self.record_s = launch_s / 4 if record_s is None else record_s
        self.event_resolution_s, self.devices = event_resolution_s, devices
        self.now = 0.0
        self.streams: list[Stream] = []
        self.engines = {"h2d": 0.0, "d2h": 0.0}  # when each copy engine is next free
        self.pending: list[float] = []  # a heap of the end times of submitted commands not known to have retired
        self.log: list[Command] = []
        self.cold = False
        self.interrupt_time: float | None = None
        self.interrupted_at: float | None = None
        self.default = Stream(self, name="default")
        self._current = self.default
        self.Event = lambda enable_timing=False, **kw: Event(self, enable_timing)
        self.Stream = lambda device=None, **kw: Stream(self, device)

    # ------------------------------------------------------------ the clocks the tests install

    def clock(self) -> float:
        """time.perf_counter for the code under test."""
        self._maybe_interrupt()
        return self.now

    def time_module(self) -> types.SimpleNamespace:
        """A stand-in for the `time` module: perf_counter/monotonic/time read the virtual clock."""
        def sleep(seconds: float) -> None:
            self.now += max(0.0, seconds)
            self._maybe_interrupt()
        return types.SimpleNamespace(perf_counter=self.clock, monotonic=self.clock, time=self.clock, sleep=sleep)

    def interrupt_at(self, t: float) -> None:
        self.interrupt_time = t

    def _maybe_interrupt(self) -> None:
        if self.interrupt_time is not None and self.now >= self.interrupt_time and self.interrupted_at is None:
            self.interrupted_at = self.now
            raise KeyboardInterrupt

    # ------------------------------------------------------------ torch.cuda's API

    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return self.devices

    def current_stream(self, device=None) -> Stream:
        return self._current

    def default_stream(self, device=None) -> Stream:
        return self.default

    @contextlib.contextmanager
    def stream(self, s: Stream | None):
        previous = self._current
        self._current = s or previous
        try:
            yield
        finally:
            self._current = previous

    def device(self, device) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def set_device(self, device) -> None:
        pass

    def synchronize(self, device=None) -> None:
        self._block_until(max(s.tail for s in self.streams))

    def empty_cache(self) -> None:
        pass

    def _sleep(self, cycles: int) -> None:
        self._enqueue(self._current, "sleep", "spin", cycles / self.sm_clock_hz)

    # ------------------------------------------------------------ work the tests hand to the timers

    def kernel(self, seconds: float, cold_s: float | None = None, label: str = "work"):
        """A function that launches one kernel on the current stream: `cold_s` long right after a flush."""
        def launch() -> None:
            cold = cold_s is not None and self.cold
            self._enqueue(self._current, "kernel", label, cold_s if cold else seconds, cold=cold)
            self.cold = False
        return launch

    def flush(self, seconds: float = 20e-6) -> None:
        """Enqueue an L2 flush (a kernel writing a large buffer): the next work runs on a cold L2."""
        self._enqueue(self._current, "flush", "l2_flush", seconds)
        self.cold = True

    def copy(self, direction: str, seconds: float, label: str = ""):
        """A function that enqueues one copy on the current stream, on the copy engine of `direction`."""
        def issue() -> None:
            self._enqueue(self._current, "copy", label or direction, seconds, engine=direction)
        return issue

    # ------------------------------------------------------------ the model

    def _block_until(self, t: float) -> None:
        self.now = max(self.now, t)
        self._maybe_interrupt()

    def _enqueue(self, stream: Stream, kind: str, label: str, seconds: float, after: float = 0.0,
                 engine: str | None = None, cold: bool = False) -> Command:
        self._maybe_interrupt()
        while self.pending and self.pending[0] <= self.now:
            heapq.heappop(self.pending)
        while len(self.pending) >= self.queue_depth:  # the host blocks until the oldest command retires
            self.now = max(self.now, heapq.heappop(self.pending))
        self.now += self.launch_s if kind in ("kernel", "copy", "sleep", "flush") else self.record_s
        start = max(self.now, stream.tail, after, self.engines[engine] if engine else 0.0)
        command = Command(kind, label, stream, self.now, start, start + seconds, cold)
        stream.tail = command.end
        if engine:
            self.engines[engine] = command.end
        heapq.heappush(self.pending, command.end)
        if kind not in ("event", "wait"):
            self.log.append(command)
        return command

    # ------------------------------------------------------------ what the tests read back

    def busy_s(self, label: str = "work") -> float:
        """Device time spent in commands with this label."""
        return sum(c.end - c.start for c in self.log if c.label == label)

    def commands(self, label: str) -> list[Command]:
        return [c for c in self.log if c.label == label]


def install(monkeypatch, *modules, **kwargs) -> VirtualCuda:
    """A VirtualCuda in place of torch.cuda and the time module, in each of `modules` (their `torch`, `time`)."""
    import torch

    cuda = VirtualCuda(**kwargs)
    fake_torch = types.SimpleNamespace(**{n: getattr(torch, n) for n in ("device", "float32", "tensor")})
    fake_torch.cuda = cuda
    for module in modules:
        if hasattr(module, "torch"):
            monkeypatch.setattr(module, "torch", fake_torch)
        if hasattr(module, "time"):
            monkeypatch.setattr(module, "time", cuda.time_module())
    return cuda
