"""The `cardbench` command."""
from __future__ import annotations

import argparse
import sys


def _families(text: str) -> list[str]:
    from .commands.run import FAMILIES

    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown family {', '.join(unknown) or '(none)'}; available: {', '.join(FAMILIES)}")
    return names


def _positive(convert, what: str):
    """An argparse type: `convert` the text and require it above zero."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = 0
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value
    return parse


_positive_int = _positive(int, "a whole number of at least 1")
_seconds = _positive(float, "a positive number of seconds")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cardbench", description="GPU micro-benchmarks against the spec sheet.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="measure, print a table, write one results CSV")
    run.add_argument("--device", default="all",
                     help="cpu, cuda:N, or all (default: every visible GPU; the CPU when there is none)")
    run.add_argument("--families", type=_families, default=None,
                     help="comma-separated benchmark families: memory, matmul, transfer, collective (default: all)")
    run.add_argument("--profile", choices=("quick", "full"), default="quick",
                     help="quick: headline sizes only; full: adds size sweeps and a wider tuning search")
    run.add_argument("--out", default="results", help="directory for the results CSV (default: results/)")
    run.add_argument("--specs", metavar="FILE", help="TOML spec entries that add to or override the shipped ones")
    run.add_argument("--case-timeout", type=_seconds, default=1800.0, metavar="SECONDS",
                     help="a case still running after this long is taken as hung: the file is closed as "
                          "incomplete naming it, and the run exits 124 (default 1800)")
    run.add_argument("--ranks", type=_positive_int, default=2,
                     help="CPU mode: gloo processes the collective family starts (default 2)")
    run.add_argument("--collective-timeout", type=_seconds, default=300.0, metavar="SECONDS",
                     help="collective family: rendezvous and per-operation timeout; a job where no rank made "
                          "progress for this long is ended (default 300)")
    sp = sub.add_parser("specs", help="the spec-sheet entries with their sources")
    from .core import specs

    specs.add_arguments(sp)
    ep = sub.add_parser("env", help="the machine: cards, links, topology, NUMA, ECC, versions (--json for scripts)")
    from .commands import env

    env.add_arguments(ep)
    cp = sub.add_parser("compare", help="per-metric change between two runs, with confidence intervals")
    from .commands import compare

    compare.add_arguments(cp)
    ap = sub.add_parser("accept", help="acceptance verdicts per card: PASS / FAIL / INCONCLUSIVE per check")
    from .commands import accept

    accept.add_arguments(ap)
    rp = sub.add_parser("report", help="publishable measured-versus-claimed report (Markdown, HTML, plots)")
    from .commands import report

    report.add_arguments(rp)
    zp = sub.add_parser("size", help="will a model fit, and how fast: fine-tuning memory, step time, inference")
    from .commands import size

    size.add_arguments(zp)
    hp = sub.add_parser("history", help="each card's headline numbers over time, version changes marked")
    from .commands import history

    history.add_arguments(hp)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    args.argv = argv
    if args.command == "run":
        from .commands import run

        args.families = args.families or list(run.FAMILIES)
        return run.main(args)
    if args.command == "specs":
        from .core import specs

        return specs.specs_main(args)
    if args.command == "env":
        from .commands import env

        return env.env_main(args)
    if args.command == "compare":
        from .commands import compare

        return compare.compare_main(args)
    if args.command == "accept":
        from .commands import accept

        return accept.accept_main(args)
    if args.command == "report":
        from .commands import report

        return report.report_main(args)
    if args.command == "size":
        from .commands import size

        return size.size_main(args)
    if args.command == "history":
        from .commands import history

        return history.history_main(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
