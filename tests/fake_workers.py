"""Collective workers that fail on purpose: started by bench/core/launch.py in a worker process
(so this module imports nothing from the tests' own helpers)."""
import os
import time

from bench.families import collective_worker


def _rank_1_at_all_gather(ctx, payload, fail) -> None:
    """The real worker, except that rank 1 calls `fail()` when it reaches the all-gather steps."""
    if ctx.rank == 1:
        real = ctx.progress

        def progress(label):
            if label.startswith("all_gather"):
                fail()
            real(label)
        ctx.progress = progress
    collective_worker.worker(ctx, payload)


def exit_early_worker(ctx, payload):
    """Rank 1 exits with code 3 when it reaches the all-gather steps."""
    _rank_1_at_all_gather(ctx, payload, lambda: os._exit(3))


def hanging_worker(ctx, payload):
    """Rank 1 stops answering when it reaches the all-gather steps."""
    _rank_1_at_all_gather(ctx, payload, lambda: time.sleep(600))


def wrong_sum_worker(ctx, payload):
    """Rank 1 sends rank+2 instead of rank+1 to every all-reduce, and to the reduce-scatter chunk
    that rank 1 receives: a rank computing the wrong thing."""
    if ctx.rank == 1:
        real = collective_worker.fill_inputs

        def fill_inputs(benchmark, inp, rank, n):
            real(benchmark, inp, rank, n)
            if benchmark == "all_reduce":
                inp.add_(1)
            if benchmark == "reduce_scatter":
                inp.view(n, -1)[1].add_(1)
        collective_worker.fill_inputs = fill_inputs
    collective_worker.worker(ctx, payload)
