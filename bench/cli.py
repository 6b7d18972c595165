"""The `cardbench` command: one sub-command per module of bench/commands/, listed in COMMANDS."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# name: (module in bench/commands/, one line of help). Each module has add_arguments(parser) and main(args).
COMMANDS = {
    "run": ("run", "measure, print a table, write one results CSV"),
    "accept": ("accept", "acceptance verdicts per card: PASS / FAIL / INCONCLUSIVE per check"),
    "compare": ("compare", "per-metric change between two runs, with confidence intervals"),
    "report": ("report", "publishable measured-versus-claimed report (Markdown, HTML, plots)"),
    "history": ("history", "each card's headline numbers over time, version changes marked"),
    "burn": ("burn", "every GPU under sustained load at once, every result checked (burn-in)"),
    "size": ("size", "will a model fit, and how fast: fine-tuning memory, step time, inference"),
    "specs": ("specs", "the spec-sheet entries with their sources"),
    "env": ("env", "the machine: cards, links, topology, NUMA, ECC, versions (--json for scripts)"),
}


def _command(name: str):
    return importlib.import_module(f"{__package__}.commands.{COMMANDS[name][0]}")


def _version() -> str:
    from .core import identity

    run = identity.run_identity()
    commit = f" ({run['cardbench_commit']})" if run["cardbench_commit"] else ""
    return f"cardbench {run['cardbench_version'] or 'unknown (not installed)'}{commit}"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cardbench", description="GPU micro-benchmarks against the spec sheet.")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True)
    for name, (_module, help_text) in COMMANDS.items():
        _command(name).add_arguments(sub.add_parser(name, help=help_text))
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    args.argv = argv
    try:
        return _command(args.command).main(args)
    except BrokenPipeError:
        # Output piped into `head` that stopped reading: end quietly, as `cat file | head` does
        # (https://docs.python.org/3/library/signal.html#note-on-sigpipe).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
