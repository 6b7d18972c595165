"""Finding the slow GPU, node or link of a collective job: each rank's own times, and pairwise all-reduce.

**Each rank's own times.** An operation of a collective ends for every rank only once the
last rank has joined it, so the rank that holds the others up spends the *least* time in
each operation: everyone else's time includes waiting for it (NCCL's maintainers look for
"nodes that are slow in computation that makes all other nodes wait",
https://github.com/NVIDIA/nccl/issues/349). Every rank's median own time per operation is
kept on each size's row (`rank_time_median_s`). At one size a rank *stands out* when every
other rank's median is more than STANDS_OUT (10%, the spread cardbench flags as noisy)
above its own; it is *the slow rank* when it stands out at more than half of the sizes
measured (and at least two): the rows and the summary name it with its host and device.
A rank that arrives late is what this finds (a slow host, a busy CPU, a GPU slow at the
work between operations). A slow link or a slow GPU inside the operation paces every rank
alike and does not show here: the pairs find those.

**Pairs** (`cardbench run --families collective --pairs`): all-reduce between every pair of
ranks, or of nodes when the job spans several (the pair's group is then every rank of both
nodes), one pair at a time so no two pairs share a link while measured, at one size; each
pair's busbw is a row. A rank or node whose pairs are all slower than the others' (its
median more than PAIR_MARGIN, 20%, below theirs) is named; otherwise each pair more than
20% below the median pair is (a link). This is the
pairwise test DeepSpeed's maintainers run by hand to find a slow node
(https://github.com/deepspeedai/DeepSpeed/issues/1617). On a machine whose GPUs sit behind
different PCIe switches or CPU sockets some pairs are slower by design: read the names
against `cardbench env`'s topology.
"""
from __future__ import annotations

import itertools
import json
import statistics

from ..core import faults

STANDS_OUT = 0.10
PAIR_MARGIN = 0.20
PAIR_BENCHMARK = "all_reduce_pair"
PAIR_DTYPE = "bf16"
PAIR_BYTES = {"nccl": 256 * 2**20, "gloo": 2**20}  # one size per pair, near the peak of two ranks (gloo: small)
SLOW_RANK_PAUSE_S = 0.005  # CARDBENCH_INJECT_FAULT=slow-rank:N: rank N sleeps this long before each timed operation


# ---------------------------------------------------------------- fault injection


def slow_rank_fault(world_size: int) -> tuple[int | None, str]:
    """(the rank CARDBENCH_INJECT_FAULT=slow-rank:N slows, or None; what is wrong with the setting, or "")."""
    try:
        arg = faults.active().get("slow-rank")
    except faults.FaultError as e:
        return None, str(e)
    if arg is None:
        return None, ""
    if not arg.isdigit() or int(arg) >= world_size:
        return None, (f"{faults.ENV}: slow-rank:{arg or '?'} must name a rank from 0 to {world_size - 1} "
                      f"(e.g. slow-rank:{min(2, world_size - 1)})")
    return int(arg), ""


# ---------------------------------------------------------------- each rank's own times


def standing_out(medians: list[float]) -> tuple[int, float] | None:
    """(the rank every other rank waited for at this size, the median of their extra time) or None."""
    if len(medians) < 2 or not all(m > 0 for m in medians):
        return None
    rank = min(range(len(medians)), key=medians.__getitem__)
    others = [m for r, m in enumerate(medians) if r != rank]
    if min(others) <= medians[rank] * (1 + STANDS_OUT):
        return None
    return rank, statistics.median(others) - medians[rank]


def size_params(rec: dict) -> dict:
    """What a size's row says about the ranks: each one's median time, and the one that stood out."""
    medians = rec.get("rank_time_median_s")
    if not medians:
        return {}
    out = {"rank_time_median_s": medians}
    found = standing_out(medians)
    if found:
        out.update(slow_rank=found[0], slow_rank_wait_s=found[1])
    return out


def slow_rank(records: list[dict]) -> tuple[int, int, int, float] | None:
    """(rank, sizes where it stood out, sizes measured, median wait) when one rank stood out at more
    than half of the sizes (and at least two); else None."""
    measured = [r for r in records if r.get("rank_time_median_s")]
    found = [f for f in (standing_out(r["rank_time_median_s"]) for r in measured) if f]
    if not found:
        return None
    counts: dict[int, list[float]] = {}
    for rank, wait in found:
        counts.setdefault(rank, []).append(wait)
    rank, waits = max(counts.items(), key=lambda item: len(item[1]))
    if len(waits) < 2 or len(waits) * 2 <= len(measured):
        return None
    return rank, len(waits), len(measured), statistics.median(waits)


def rank_text(rank: int, names: list[str]) -> str:
    where = names[rank] if rank < len(names) else ""
    return f"rank {rank}" + (f" ({where})" if where else "")


def slow_rank_note(records: list[dict], names: list[str]) -> str:
    found = slow_rank(records)
    if found is None:
        return ""
    rank, hits, total, wait = found
    return (f"slow rank: {rank_text(rank, names)}: the other ranks waited for it at {hits} of {total} sizes "
            f"(median {wait * 1e3:,.2f} ms per operation)")


# ---------------------------------------------------------------- pairs


def pairs_mode(run) -> bool:
    return bool(getattr(run.options, "pairs", False))


def pair_size(world_size: int, nodes: int) -> int:
    """Ranks in one pair's all-reduce: two, or every rank of two nodes."""
    return 2 if nodes <= 1 else 2 * (world_size // nodes)


def pair_units(world_size: int, nodes: int) -> tuple[str, int]:
    """What a pair is made of: ("nodes", count) when the job spans several nodes, else ("ranks", count)."""
    return ("nodes", nodes) if nodes > 1 else ("ranks", world_size)


def pair_names(world_size: int, nodes: int) -> list[str]:
    """The case of each pair, in the order the workers measure them: "ranks-0-1", ... or "nodes-0-1", ..."""
    kind, count = pair_units(world_size, nodes)
    return [f"{kind}-{a}-{b}" for a, b in itertools.combinations(range(count), 2)]


def pair_members(kind: str, hosts: list[str]) -> list[list[int]]:
    """The ranks of each unit: one rank each, or every rank of each host (hosts in order of their first rank)."""
    if kind == "ranks":
        return [[r] for r in range(len(hosts))]
    order = list(dict.fromkeys(hosts))
    return [[r for r, h in enumerate(hosts) if h == host] for host in order]


def slow_unit(busbw: dict[tuple[int, int], float]) -> int | None:
    """The rank or node in the slow pairs: the median busbw of its pairs is more than PAIR_MARGIN below
    the median of the other units' medians, and each of its pairs is slower than the median pair
    without it. None when no unit is (or with fewer than three units: one pair names no culprit)."""
    units = sorted({u for pair in busbw for u in pair})
    if len(units) < 3:
        return None
    score = {u: statistics.median(v for pair, v in busbw.items() if u in pair) for u in units}
    worst = min(units, key=score.__getitem__)
    others = statistics.median(score[u] for u in units if u != worst)
    mine = [v for pair, v in busbw.items() if worst in pair]
    rest = [v for pair, v in busbw.items() if worst not in pair]
    if score[worst] < (1 - PAIR_MARGIN) * others and max(mine) < statistics.median(rest):
        return worst
    return None


def pair_lines(rows: list[dict]) -> list[str]:
    """After a --pairs run: the pairs' busbw, worst first, and the rank or node in the slow pairs, or the
    slow pairs themselves (a link)."""
    ok = [r for r in rows if r["family"] == "collective" and r["benchmark"] == PAIR_BENCHMARK and r["status"] == "ok"]
    if not ok:
        return []
    kind = ok[0]["case"].split("-")[0][:-1]  # "rank" or "node"
    busbw, label, noisy = {}, {}, set()
    for r in ok:
        a, b = (int(x) for x in r["case"].split("-")[1:])
        busbw[a, b] = float(r["value"])
        if "noisy" in r.get("message", ""):
            noisy.add((a, b))
        for unit, name in zip((a, b), json.loads(r["params"]).get("pair_names", [])):
            label[unit] = f"{kind} {unit} ({name})"
    name = {u: label.get(u, f"{kind} {u}") for pair in busbw for u in pair}
    ranked = sorted(busbw.items(), key=lambda kv: kv[1])
    shown = ", ".join(f"{a}-{b} {v:,.3g}" for (a, b), v in ranked[:8]) + (" ..." if len(ranked) > 8 else "")
    lines = [f"pairs: all-reduce busbw of {len(busbw)} pair(s) of {kind}s, one pair at a time, worst first: "
             f"{shown} GB/s (best {ranked[-1][1]:,.3g})"]
    culprit = slow_unit(busbw)
    if culprit is not None:
        slow = [f"{a}-{b}" for (a, b), _v in ranked if culprit in (a, b)]
        lines.append(f"pairs: {name[culprit]} is in the slow pairs: all its pairs ({', '.join(slow)}) are slower "
                     f"than the others, its median more than {PAIR_MARGIN:.0%} below theirs")
        return lines
    typical = statistics.median(busbw.values())
    slow_pairs = [(pair, v) for pair, v in ranked if v < (1 - PAIR_MARGIN) * typical]
    if slow_pairs:
        lines.append(f"pairs: more than {PAIR_MARGIN:.0%} below the median pair ({typical:,.3g} GB/s), the link "
                     "between: " + "; ".join(f"{name[a]} and {name[b]} {v:,.3g} GB/s" for (a, b), v in slow_pairs)
                     + ("; noisy rows among them: measure again before acting"
                        if any(pair in noisy for pair, _v in slow_pairs) else ""))
    else:
        lines.append(f"pairs: no pair more than {PAIR_MARGIN:.0%} below the median pair ({typical:,.3g} GB/s)")
    return lines
