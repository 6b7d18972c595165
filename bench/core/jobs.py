"""Which multi-rank job this process belongs to: torchrun's or Slurm srun's environment, or one started here.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT
(https://pytorch.org/docs/stable/elastic/run.html#environment-variables); srun sets
SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID and SLURM_STEP_NODELIST
(https://slurm.schedmd.com/srun.html#SECTION_OUTPUT-ENVIRONMENT-VARIABLES). Reading them
is all this module does; bench/core/launch.py starts and supervises the workers.
"""
from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass


class LaunchError(RuntimeError):
    """A rank that cannot be placed (no GPU for its local rank)."""


@dataclass(frozen=True)
class Job:
    """Where this process sits in a multi-rank job."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    nodes: int
    master_addr: str
    master_port: int  # 0: pick a free port (started here)
    source: str  # "torchrun" or "slurm" (joined), "local" (started by cardbench)
    job_id: str  # namespace of this job's keys in the store
    agent_store: bool = False  # torchrun's agent hosts the store: every rank is a client


def _int(env, *names: str) -> int | None:
    for name in names:
        try:
            return int(str(env.get(name, "")).strip())
        except ValueError:
            continue
    return None


def joined_job(env=None) -> Job | None:
    """The torchrun or srun job this process belongs to; None when there is none or it has one rank.

    A batch script's own shell (sbatch) has SLURM_PROCID but no SLURM_STEP_NUM_TASKS:
    only a step started by srun is a job to join.
    """
    env = os.environ if env is None else env
    world, rank = _int(env, "WORLD_SIZE"), _int(env, "RANK")
    if world is not None and rank is not None and env.get("MASTER_ADDR") and _int(env, "MASTER_PORT"):
        if world < 2:
            return None
        local_world = _int(env, "LOCAL_WORLD_SIZE") or world
        nodes = _int(env, "GROUP_WORLD_SIZE") or -(-world // local_world)
        run_id = env.get("TORCHELASTIC_RUN_ID") or "torchrun"
        return Job(rank, world, _int(env, "LOCAL_RANK") or 0, local_world, nodes, env["MASTER_ADDR"],
                   _int(env, "MASTER_PORT"), "torchrun", f"{run_id}.{env.get('TORCHELASTIC_RESTART_COUNT', '0')}",
                   env.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true")
    world, rank = _int(env, "SLURM_STEP_NUM_TASKS"), _int(env, "SLURM_PROCID")
    if world is None or rank is None or world < 2:
        return None
    hosts = parse_nodelist(env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "")
    master = env.get("MASTER_ADDR") or (hosts[0] if hosts else "")  # "": run() says to set MASTER_ADDR
    job = env.get("SLURM_JOB_ID", "0")
    port = _int(env, "MASTER_PORT") or 20000 + (int(job) if job.isdigit() else 0) % 20000
    nodes = _int(env, "SLURM_STEP_NUM_NODES", "SLURM_NNODES") or max(1, len(hosts))
    per_node = parse_tasks_per_node(env.get("SLURM_STEP_TASKS_PER_NODE", ""))
    node = _int(env, "SLURM_NODEID") or 0
    local_world = per_node[node] if node < len(per_node) else -(-world // nodes)
    return Job(rank, world, _int(env, "SLURM_LOCALID") or 0, local_world, nodes, master, port, "slurm",
               f"slurm{job}.{env.get('SLURM_STEP_ID', '0')}")


def parse_nodelist(text: str) -> list[str]:
    """Slurm's compact host list: "gpu[01-03,07],login2" -> gpu01, gpu02, gpu03, gpu07, login2."""
    tokens, depth, start = [], 0, 0
    for i, c in enumerate(text):
        depth += c == "["
        depth -= c == "]"
        if c == "," and depth == 0:
            tokens.append(text[start:i])
            start = i + 1
    tokens.append(text[start:])
    return [host for token in tokens if token.strip() for host in _expand(token.strip())]


def _expand(token: str) -> list[str]:
    m = re.match(r"^([^\[]*)\[([^\]]*)\](.*)$", token)
    if not m:
        return [token]
    prefix, ranges, rest = m.groups()
    heads = []
    for part in ranges.split(","):
        lo, _, hi = part.partition("-")
        if hi:  # zero padding is the width of the lower bound ("01-12")
            heads += [f"{prefix}{i:0{len(lo)}d}" for i in range(int(lo), int(hi) + 1)]
        else:
            heads.append(prefix + lo)
    return [h + tail for h in heads for tail in (_expand(rest) if rest else [""])]


def parse_tasks_per_node(text: str) -> list[int]:
    """Slurm's "8(x2),4" -> [8, 8, 4]."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.match(r"^(\d+)(?:\(x(\d+)\))?$", part)
        if not m:
            return []
        out += [int(m.group(1))] * int(m.group(2) or 1)
    return out


def local_device(local_rank: int, device_count: int) -> int:
    """The CUDA index a rank binds to: its LOCAL_RANK, or 0 where each task sees only its own GPU."""
    if local_rank < device_count:
        return local_rank
    if device_count == 1:  # srun --gpus-per-task=1 / CUDA_VISIBLE_DEVICES set per task
        return 0
    raise LaunchError(f"local rank {local_rank} has no GPU: {device_count} visible on this node")


# ---------------------------------------------------------------- the supervisor


def local_job(world_size: int) -> Job:
    """A job of `world_size` worker processes that this process starts on this machine."""
    return Job(0, world_size, 0, world_size, 1, "127.0.0.1", 0, "local", uuid.uuid4().hex[:12])
