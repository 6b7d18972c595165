"""Collective workers that fail on purpose: started by bench/core/launch.py in a worker process
(so this module imports nothing from the tests' own helpers)."""
import os
import time

from bench.families import collective_worker


def exit_early_worker(ctx, payload):
    """Rank 1 exits with code 3 when it reaches the all-gather steps."""
    if ctx.rank == 1:
        real = ctx.progress

        def progress(label):
            if label.startswith("all_gather"):
                os._exit(3)
            real(label)
        ctx.progress = progress
    collective_worker.worker(ctx, payload)


def hanging_worker(ctx, payload):
    """Rank 1 stops answering when it reaches the all-gather steps."""
    if ctx.rank == 1:
        real = ctx.progress

        def progress(label):
            if label.startswith("all_gather"):
                time.sleep(600)
            real(label)
        ctx.progress = progress
    collective_worker.worker(ctx, payload)
