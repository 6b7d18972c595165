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
