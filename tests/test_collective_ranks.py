"""Finding the slow rank, GPU, node or link: each rank's own times, the rank the others waited
for (named with host and device), and --pairs, with gloo ranks on the CPU and the documented
fault injection CARDBENCH_INJECT_FAULT=slow-rank:N (rank N sleeps before each timed operation)."""
import contextlib
import json

import pytest

from bench.core import faults, launch, timing, timing_multi
from bench.core.devices import cpu_target
from bench.core.options import RunOptions
from bench.families import collective
from bench.families import collective_ranks as ranks
from helpers import make_run, measure
from test_collective import SMALL, small_sweep  # noqa: F401  (the fixture)


def text_rows(rows):
    return [{k: "" if v is None else str(v) for k, v in r.items()} for r in rows]


def run_family(ranks_n: int, pairs: bool = False, timeout_s: float = 60) -> list[dict]:
    target = cpu_target()
    run = make_run([target], ranks=ranks_n, collective_timeout_s=timeout_s, pairs=pairs)
    return text_rows([measure(collective, target, c, run) for c in collective.cases(target, run)])


# ---------------------------------------------------------------- the rules, on numbers


def test_the_rank_the_others_wait_for_is_the_one_with_the_shortest_own_time():
    # every other rank's operation includes waiting for rank 2: theirs are long, its own short
    assert ranks.standing_out([6.1e-3, 6.0e-3, 1.0e-3, 6.2e-3]) == (2, pytest.approx(5.1e-3))
    assert ranks.standing_out([6.1e-3, 6.0e-3, 5.8e-3, 6.2e-3]) is None  # within 10%: nobody
    assert ranks.standing_out([1e-3]) is None


def test_a_rank_is_the_slow_one_only_when_it_stands_out_at_most_sizes():
    late = {"rank_time_median_s": [2e-3, 2e-3, 1e-3, 2e-3]}
    even = {"rank_time_median_s": [2e-3, 2e-3, 2e-3, 2e-3]}
    assert ranks.slow_rank([late, late, even]) == (2, 2, 3, pytest.approx(1e-3))
    assert ranks.slow_rank([late, even, even, even]) is None  # once in four sizes: noise, not a culprit
    assert ranks.slow_rank([late, even]) is None  # half is not most
    note = ranks.slow_rank_note([late, late], ["gpu07 cuda:0", "gpu07 cuda:1", "gpu07 cuda:2", "gpu07 cuda:3"])
    assert note.startswith("slow rank: rank 2 (gpu07 cuda:2): the other ranks waited for it at 2 of 2 sizes")


def test_the_unit_in_every_slow_pair_is_named_and_a_slow_link_alone_is_a_pair():
    fast, slow = 40.0, 10.0
    pairs = {(a, b): slow if 2 in (a, b) else fast for a in range(4) for b in range(a + 1, 4)}
    assert ranks.slow_unit(pairs) == 2
    three = {(0, 1): fast, (0, 2): slow, (1, 2): slow}  # two of three pairs slow: the median pair is slow
    assert ranks.slow_unit(three) == 2
    link = dict.fromkeys(pairs, fast) | {(0, 3): slow}  # one bad link: neither end is in every slow pair
    assert ranks.slow_unit(link) is None
    assert ranks.slow_unit({(0, 1): slow}) is None  # one pair cannot say which end
    rows = [{"family": "collective", "benchmark": ranks.PAIR_BENCHMARK, "status": "ok", "case": f"ranks-{a}-{b}",
             "value": str(v), "message": "", "params": json.dumps({"pair_names": [f"n1 cuda:{a}", f"n1 cuda:{b}"]})}
            for (a, b), v in link.items()]
    (listing, verdict) = ranks.pair_lines(rows)
    assert listing.startswith("pairs: all-reduce busbw of 6 pair(s) of ranks") and "0-3 10" in listing
    assert "the link between: rank 0 (n1 cuda:0) and rank 3 (n1 cuda:3) 10 GB/s" in verdict


def test_pairs_are_every_two_ranks_on_one_node_and_every_two_nodes_across_nodes():
    assert ranks.pair_names(4, 1) == ["ranks-0-1", "ranks-0-2", "ranks-0-3", "ranks-1-2", "ranks-1-3", "ranks-2-3"]
    assert ranks.pair_names(24, 3) == ["nodes-0-1", "nodes-0-2", "nodes-1-2"]
    assert ranks.pair_size(24, 3) == 16 and ranks.pair_size(4, 1) == 2
    hosts = ["b", "b", "a", "a", "c", "c"]
    assert ranks.pair_members("nodes", hosts) == [[0, 1], [2, 3], [4, 5]]  # nodes in order of their first rank
    assert ranks.pair_members("ranks", hosts) == [[r] for r in range(6)]


def test_the_pause_of_a_late_rank_is_outside_its_own_samples(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])

    def op():
        clock[0] += 0.001

    def pause():
        clock[0] += 1.0
    result = timing_multi.time_ops(op, False, 0.05, lambda v: [x * 3 for x in v], lambda: None,
                             contextlib.nullcontext(), pause=pause)
    assert result.own_samples_s == [pytest.approx(0.001)] * len(result.samples_s)
    assert result.samples_s == [pytest.approx(0.003)] * len(result.own_samples_s)  # the slowest rank's


# ---------------------------------------------------------------- gloo ranks with a slow rank


@pytest.mark.usefixtures("small_sweep")
def test_slow_rank_2_is_named_with_its_host_on_the_rows_and_in_the_summary(monkeypatch, capfd):
    monkeypatch.setenv(faults.ENV, "slow-rank:2")
    rows = run_family(4)
    assert "FAULT INJECTION ON" in capfd.readouterr().err
    assert {r["status"] for r in rows} == {"ok"}, [r["message"] for r in rows if r["status"] != "ok"]
    host = launch.socket.gethostname()
    sized = [json.loads(r["params"]) for r in rows if r["case"].startswith("size-")]
    assert all(len(p["rank_time_median_s"]) == 4 and p["rank_names"][2] == f"{host} cpu" for p in sized)
    assert sum(p.get("slow_rank") == 2 for p in sized) * 2 > len(sized)
    peaks = [r for r in rows if r["case"] == "peak"]
    assert all(f"slow rank: rank 2 ({host} cpu)" in r["message"] for r in peaks), [r["message"] for r in peaks]
    summary = collective.summary_lines(rows)
    assert any(line.startswith(f"collective: slow rank: rank 2 ({host} cpu): the other ranks waited for it")
               for line in summary), summary


@pytest.mark.usefixtures("small_sweep")
def test_a_slow_rank_setting_that_names_no_rank_is_an_error_naming_it(monkeypatch):
    monkeypatch.setenv(faults.ENV, "slow-rank:9")
    rows = run_family(2)
    assert {r["status"] for r in rows} == {"error"}
    assert all("slow-rank:9 must name a rank from 0 to 1" in r["message"] for r in rows)


@pytest.mark.usefixtures("small_sweep")
def test_pairs_find_rank_2(monkeypatch):
    monkeypatch.setenv(faults.ENV, "slow-rank:2")
    monkeypatch.setitem(ranks.PAIR_BYTES, "gloo", 16 * 2**10)
    rows = run_family(4, pairs=True)
    assert [r["case"] for r in rows] == ranks.pair_names(4, 1)
    assert {r["status"] for r in rows} == {"ok"} and {r["benchmark"] for r in rows} == {ranks.PAIR_BENCHMARK}
    for r in rows:
        p = json.loads(r["params"])
        assert p["pair_size"] == 2 and p["busbw_factor"] == 1.0  # two ranks: busbw = algbw (nccl-tests)
        assert p["pair_ranks"] == [int(x) for x in r["case"].split("-")[1:]]
    lines = collective.summary_lines(rows)
    assert any(line.startswith(f"pairs: rank 2 ({launch.socket.gethostname()} cpu) is in the slow pairs")
               for line in lines), lines


def test_every_rank_of_a_joined_job_runs_the_same_mode(monkeypatch):
    """--pairs reaches the ranks that only follow (torchrun / srun), or the job would deadlock."""
    seen = []
    monkeypatch.setattr(collective.launch, "run", lambda target, payload, *a, **k: seen.append(payload))
    job = launch.Job(1, 4, 1, 2, 2, "n1", 29400, "torchrun", "x", True)
    collective.follow(job, RunOptions(device="cpu", pairs=True))
    (payload,) = seen
    assert payload["pairs"] == {"units": "nodes", "count": 2, "dtype": "bf16", "nbytes": ranks.PAIR_BYTES["gloo"]}
