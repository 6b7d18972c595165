"""Worker processes for multi-rank work: started here, or joined from torchrun or Slurm srun.

Two ways a multi-rank measurement runs:

- **started**: `cardbench run` starts one worker process per rank itself
  (`python -m <package>.core.launch SPEC.json`) and hosts their c10d TCPStore on
  127.0.0.1 at a port the OS picks, so it never clashes with another job's 29500.
- **joined**: cardbench was started by torchrun (RANK, WORLD_SIZE, LOCAL_RANK,
  MASTER_ADDR, MASTER_PORT) or by Slurm's srun (SLURM_PROCID,
  SLURM_STEP_NUM_TASKS, SLURM_LOCALID, SLURM_STEP_NODELIST). Each cardbench
  process is one rank and starts one worker for it. The store is torchrun's
  agent store (TORCHELASTIC_USE_AGENT_STORE) or, otherwise, one that global
  rank 0 hosts at MASTER_ADDR:MASTER_PORT (under Slurm: the first host of the
  step's node list, port 20000 + job id mod 20000, unless MASTER_* are set).

Either way the cardbench process never joins the process group: it supervises.
A worker that dies, raises or hangs cannot take the CSV writer, the other
families or the CUDA context of the cardbench process with it. The supervisor
names the rank and host and kills its workers (SIGTERM, then SIGKILL). Every
wait is bounded: the rendezvous and each collective have a timeout, the
supervisor ends the group when no rank has made progress for `timeout_s`, and a
worker dies with its supervisor (PR_SET_PDEATHSIG on Linux).

Store keys, under a prefix unique to the job: host/<rank> (set on arrival),
step/<rank> ("<index>|<label>" of the step the rank is in), progress (a counter
every step of every rank increments), failed/<rank> and failures (why a rank
ended badly), done/<rank>, left (supervisors that are finished with the store).
"""
from __future__ import annotations

import ctypes
import importlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

# The launch API is the job (bench/core/jobs.py), then its workers (here).
from .jobs import (Job, LaunchError, joined_job, local_device, local_job, parse_nodelist,  # noqa: F401
                   parse_tasks_per_node)

DEFAULT_TIMEOUT_S = 300.0  # node start-up (torch import, CUDA and NCCL init) can take a minute on a cold node
POLL_S = 0.1
KILL_GRACE_S = 3.0
LINGER_S = 10.0  # a store host waits this long for the others to read a failure before it goes away
REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout (or site-packages) that holds this package
_attempts = itertools.count()


class WorkerFailure(RuntimeError):
    """A rank died, raised or stopped making progress; the message names the rank and its host."""


@dataclass
class _Worker:
    rank: int
    proc: subprocess.Popen
    log: Path


def _store(host: str, port: int, timeout_s: float, is_master: bool):
    import torch.distributed as dist

    return dist.TCPStore(host, port, is_master=is_master, wait_for_workers=False,
                         timeout=timedelta(seconds=timeout_s))


def run(target: str, payload: dict, job: Job, ranks: list[dict], timeout_s: float,
        result_rank: int | None, host_store: bool, on_record=None) -> list[dict]:
    """Start one worker per entry of `ranks` ({"rank", "local_rank", "device"}), supervise them.

    `target` is "module:function", called in each worker as function(context, payload).
    Returns the records (JSON objects) that worker `result_rank` emitted; `on_record(record)`
    is called for each as soon as the worker has written it. Raises
    WorkerFailure naming the rank and host when any rank of the job dies, raises or
    stops making progress for `timeout_s`; its records so far are on the exception.
    """
    import torch.distributed as dist

    host = job.master_addr
    if not host:
        raise WorkerFailure(f"no rendezvous address for this {job.source} job: set MASTER_ADDR and MASTER_PORT")
    try:
        base = _store(host, job.master_port, timeout_s, host_store)
    except Exception as e:  # no store host within timeout_s, or the port is taken
        what = "host" if host_store else "reach"
        raise WorkerFailure(f"rank {job.rank} ({socket.gethostname()}) could not {what} the rendezvous store at "
                            f"{host}:{job.master_port}: {' '.join(str(e).split())}"[:400]) from None
    port = base.port if host_store else job.master_port

    prefix = f"cardbench/{job.job_id}/{target}/{next(_attempts)}/"
    store = dist.PrefixStore(prefix, base)
    tmp = Path(tempfile.mkdtemp(prefix="cardbench-ranks-"))
    result_path = tmp / "records.jsonl"
    workers: list[_Worker] = []
    ok = False
    try:
        for spec in ranks:
            rank = spec["rank"]
            spec_file = tmp / f"rank{rank}.json"
            spec_file.write_text(json.dumps({
                "target": target, "payload": payload, "store_host": host, "store_port": port, "prefix": prefix,
                "rank": rank, "world_size": job.world_size, "local_rank": spec["local_rank"],
                "device": spec["device"], "timeout_s": timeout_s, "parent_pid": os.getpid(),
                "result_path": str(result_path) if rank == result_rank else "",
            }))
            log = tmp / f"rank{rank}.log"
            path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
            with open(log, "w") as log_file:
                proc = subprocess.Popen([sys.executable, "-m", __name__, str(spec_file)],
                                        stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                        env=dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1"),
                                        start_new_session=True)
            workers.append(_Worker(rank, proc, log))
        tail = _Tail(result_path, on_record)
        try:
            _supervise(workers, store, job.world_size, timeout_s, tail.poll)
        except WorkerFailure as e:
            tail.poll()
            e.records = read_records(result_path)
            _show_logs(workers)
            raise
        tail.poll()
        ok = True
        return read_records(result_path)
    finally:
        _stop(workers)
        _leave(store, len(workers), job.world_size, linger=host_store, timeout_s=(timeout_s if ok else LINGER_S))
        for w in workers:
            w.log.unlink(missing_ok=True)
        for p in tmp.iterdir():
            p.unlink(missing_ok=True)
        tmp.rmdir()


def _show_logs(workers: list[_Worker], lines: int = 15) -> None:
    """The end of what each local worker that failed printed (NCCL's and gloo's errors), on stderr."""
    for w in workers:
        if w.proc.poll() not in (None, 0):
            tail = w.log.read_text(errors="replace").splitlines()[-lines:] if w.log.exists() else []
            print(f"--- rank {w.rank}, last {len(tail)} lines of its output ---", *tail, sep="\n", file=sys.stderr)


def read_records(path: Path) -> list[dict]:
    """The JSON lines a worker emitted; a torn last line (the worker was killed mid-write) is dropped."""
    out = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            break
    return out


def _has(store, key: str) -> bool:
    return store.check([key])


def _text(store, key: str) -> str:
    return store.get(key).decode(errors="replace") if store.check([key]) else ""


class _Tail:
    """Hands each complete record line of a growing JSON-lines file to `on_record`, once."""

    def __init__(self, path: Path, on_record):
        self.path, self.on_record, self.offset = path, on_record, 0

    def poll(self) -> None:
        if self.on_record is None:
            return
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next poll
        for line in data[:end].splitlines():
            try:
                self.on_record(json.loads(line))
            except ValueError:
                continue
        self.offset += end


def _supervise(workers: list[_Worker], store, world_size: int, timeout_s: float, poll=lambda: None) -> None:
    last_progress, last_change = None, time.monotonic()
    while True:
        poll()
        try:
            exits = {w.rank: w.proc.poll() for w in workers}
            if any(_ended_badly(store, w, rc) for w, rc in zip(workers, exits.values())) or \
                    store.add("failures", 0) > 0:
                # One failure brings the others down within moments (a peer's closed socket): let them
                # end so that a rank that died is told apart from those that only lost it.
                _record_exits(store, workers, time.monotonic() + 1.0)
                raise WorkerFailure(diagnose(store, world_size))
            if all(rc == 0 for rc in exits.values()):
                return
            progress = store.add("progress", 0)
        except WorkerFailure:
            raise
        except Exception as e:  # the store's host went away: another node's supervisor ended
            raise WorkerFailure(f"lost the rendezvous store: {type(e).__name__}: {e}"[:400]) from None
        now = time.monotonic()
        if progress != last_progress:
            last_progress, last_change = progress, now
        elif now - last_change > timeout_s:
            raise WorkerFailure(diagnose(store, world_size, stalled_s=timeout_s))
        time.sleep(POLL_S)


def _ended_badly(store, w: _Worker, rc: int | None) -> bool:
    return rc is not None and (rc != 0 or not _has(store, f"done/{w.rank}"))


def _record_exits(store, workers: list[_Worker], until: float) -> None:
    """Write why each local worker that ended badly ended, waiting until `until` for the others to end."""
    while True:
        pending = [w for w in workers if w.proc.poll() is None]
        for w in workers:
            rc = w.proc.poll()
            if _ended_badly(store, w, rc) and not _has(store, f"failed/{w.rank}"):
                store.set(f"failed/{w.rank}", _exit_text(store, w, rc))
                store.add("failures", 1)
        if not pending or time.monotonic() >= until:
            return
        time.sleep(POLL_S / 2)


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


def _exit_text(store, w: _Worker, rc: int) -> str:
    how = f"was killed by {signal.Signals(-rc).name}" if rc < 0 and -rc in signal.valid_signals() else \
        f"exited with code {rc}"
    if rc == 0:
        how = "exited before finishing"
    host = _text(store, f"host/{w.rank}") or socket.gethostname()
    step = _step(store, w.rank)[1]
    last = _last_line(w.log)
    return f"rank {w.rank} ({host}) {how}" + (f" (last step started: {step})" if step else "") + \
        (f": {last}" if last else "")


def _step(store, rank: int) -> tuple[int, str]:
    text = _text(store, f"step/{rank}")
    index, _, label = text.partition("|")
    return (int(index), label) if index.isdigit() else (-1, "")


def diagnose(store, world_size: int, stalled_s: float | None = None) -> str:
    """Which rank ended the group, and where: the one that died first, else the one behind, else the first error."""
    hosts = {r: _text(store, f"host/{r}") for r in range(world_size)}
    steps = {r: _step(store, r) for r in range(world_size)}
    failed = {r: _text(store, f"failed/{r}") for r in range(world_size)}
    failed = {r: text for r, text in failed.items() if text}
    died = [text for text in failed.values() if " exited " in text or " was killed " in text]
    missing = [r for r in range(world_size) if not hosts[r]]
    furthest = max(i for i, _ in steps.values())
    behind = [r for r, (i, _) in steps.items() if hosts[r] and i < furthest and r not in failed]
    parts = []
    if died:
        parts += died
    elif missing:
        wait = f" within {stalled_s:g} s" if stalled_s else ""
        parts.append(f"rank{'s' if len(missing) > 1 else ''} {_ranks(missing)} never joined the rendezvous{wait}")
    elif behind:
        r = behind[0]
        parts.append(f"rank {r} ({hosts[r]}) stopped making progress (last step started: {steps[r][1]}; "
                     f"other ranks reached {steps[max(steps, key=lambda k: steps[k][0])][1]})")
    elif stalled_s is not None:
        label = steps[0][1] or "the start"
        parts.append(f"no rank made progress for {stalled_s:g} s (all at {label})")
    parts += [text for text in failed.values() if text not in parts]
    return "; ".join(parts)[:480]


def _ranks(ranks: list[int]) -> str:
    return ", ".join(map(str, ranks[:8])) + (f" and {len(ranks) - 8} more" if len(ranks) > 8 else "")


def _stop(workers: list[_Worker]) -> None:
    """SIGTERM every worker's process group, SIGKILL what is left after a grace period."""
    alive = [w for w in workers if w.proc.poll() is None]
    for w in alive:
        _signal_group(w.proc, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE_S
    for w in alive:
        try:
            w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(w.proc, signal.SIGKILL)
            w.proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # start_new_session: the worker leads its own group
    except (ProcessLookupError, PermissionError):
        pass


def _leave(store, ranks: int, world_size: int, linger: bool, timeout_s: float) -> None:
    """Say this supervisor's `ranks` are done with the store; the store's host waits for every rank first."""
    try:
        left = store.add("left", ranks)
        deadline = time.monotonic() + timeout_s
        while linger and left < world_size and time.monotonic() < deadline:
            time.sleep(POLL_S)
            left = store.add("left", 0)
    except Exception:  # the store is gone: nothing left to say
        pass


# ---------------------------------------------------------------- the worker


@dataclass
class Context:
    """What a worker function gets: its rank, device, the job's store, and two reporting calls."""

    rank: int
    world_size: int
    local_rank: int
    device: str  # "cpu" or "cuda:N"
    timeout_s: float
    store: object  # the job's PrefixStore (a process group takes a PrefixStore of it)
    host: str
    result_path: str  # "" unless this worker's records are read back
    step_label: str = "the start"
    _step_index: int = field(default=0, repr=False)

    def progress(self, label: str) -> None:
        """This rank starts `label`: the supervisors see progress and, on a failure, where each rank was."""
        self._step_index += 1
        self.step_label = label
        self.store.set(f"step/{self.rank}", f"{self._step_index}|{label}")
        self.store.add("progress", 1)

    def emit(self, record: dict) -> None:
        """One result record, on disk at once (a later failure keeps what was measured)."""
        if self.result_path:
            with open(self.result_path, "a") as f:
                f.write(json.dumps(record) + "\n")


def _die_with_parent(parent_pid: int) -> None:
    try:  # Linux: SIGKILL this worker when its supervisor dies, whatever kills it
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:
        os._exit(1)


def _resolve(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def worker_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    _die_with_parent(spec["parent_pid"])
    import torch.distributed as dist

    rank, host = spec["rank"], socket.gethostname()
    store = dist.PrefixStore(spec["prefix"], _store(spec["store_host"], spec["store_port"], spec["timeout_s"], False))
    ctx = Context(rank, spec["world_size"], spec["local_rank"], spec["device"], spec["timeout_s"], store, host,
                  spec["result_path"])
    try:
        store.set(f"host/{rank}", host)
        ctx.progress("the rendezvous")
        _resolve(spec["target"])(ctx, spec["payload"])
        store.set(f"done/{rank}", "1")
    except BaseException as e:
        traceback.print_exc()
        text = " ".join(f"{type(e).__name__}: {e}".split())
        try:
            store.set(f"failed/{rank}", f"rank {rank} ({host}) failed in {ctx.step_label}: {text}"[:400])
            store.add("failures", 1)
        except Exception:
            pass
        sys.stdout.flush()
        os._exit(1)  # no teardown: a broken communicator can hang in its destructor
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1]))
