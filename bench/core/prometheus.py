"""node_exporter textfile output: per card the headline numbers, the accept verdicts, burn counts.

Written with prometheus_client (the format is its job, not ours) into the
directory node_exporter reads with `--collector.textfile.directory`
(https://github.com/prometheus/node_exporter#textfile-collector). Names follow
https://prometheus.io/docs/practices/naming/: the `cardbench_` prefix, base
units (bytes per second, operations per second, seconds), ratios rather than
percentages.

Every series carries the card's labels: `uuid` (NVML UUID; empty in CPU mode),
`model` (NVML name), `host`, `device` (CUDA index, `cpu` in CPU mode).

| metric | value |
|---|---|
| `cardbench_memory_bandwidth_bytes_per_second` | memory headline (bench/headline.py) |
| `cardbench_matmul_operations_per_second` | matmul headline per dtype (FLOP/s; a multiply-add is 2) |
| `cardbench_transfer_bandwidth_bytes_per_second` | pinned h2d / d2h headline, per direction |
| `cardbench_collective_busbw_bytes_per_second` | all-reduce peak bus bandwidth (nccl-tests' busbw) |
| `cardbench_spec_ratio` | each headline over the vendor's dense claim (1.0 = 100%); only where a claim exists |
| `cardbench_accept_check_verdict` | per `check`: 1 PASS, 0 FAIL, -1 INCONCLUSIVE; N/A checks are left out |
| `cardbench_accept_verdict` | the card's overall verdict, same encoding |
| `cardbench_burn_mismatches` | results differing from the first GPU's during `burn` |
| `cardbench_burn_memory_errors` | memory pattern-test errors during `burn` |
| `cardbench_run_timestamp_seconds` | when the run started (its first row), Unix time |

Headline series also carry `benchmark`, `dtype`, `provider` and `case` (the
row they come from); `cardbench_spec_ratio` adds `family`. Only `ok` headlines
are exported: a failed one has no value (its verdict says why).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime
from pathlib import Path

from .results import card_key
from .headline import headlines

CARD_LABELS = ("uuid", "model", "host", "device")
ROW_LABELS = ("benchmark", "dtype", "provider", "case")
# accept's verdict strings; checks it marks N/A (not applicable on this machine) are not exported.
VERDICT_VALUES = {"PASS": 1.0, "FAIL": 0.0, "INCONCLUSIVE": -1.0}
# A row's unit to the base unit (results/SCHEMA.md: decimal GB/s; T/G FLOP/s and OPS).
TO_BASE_UNIT = {"GB/s": 1e9, "TFLOP/s": 1e12, "TOPS": 1e12, "GFLOP/s": 1e9, "GOPS": 1e9}
FAMILY_METRICS = {
    "memory": ("cardbench_memory_bandwidth_bytes_per_second",
               "Device memory copy bandwidth at the plateau working set, bytes per second"),
    "matmul": ("cardbench_matmul_operations_per_second",
               "Dense matmul throughput per dtype, operations per second (a multiply-add counts 2)"),
    "transfer": ("cardbench_transfer_bandwidth_bytes_per_second",
                 "Pinned host<->device copy bandwidth per direction, bytes per second"),
    "collective": ("cardbench_collective_busbw_bytes_per_second",
                   "All-reduce peak bus bandwidth (nccl-tests busbw), bytes per second"),
}


def check_path(path: str | os.PathLike) -> Path:
    """Refuse a path node_exporter would not read, before any measuring starts."""
    path = Path(path)
    if path.suffix != ".prom":
        raise ValueError(f"{path}: the node_exporter textfile collector only reads files ending in .prom")
    if not path.parent.is_dir():
        raise ValueError(f"{path}: directory {path.parent} does not exist (node_exporter's "
                         "--collector.textfile.directory)")
    if not os.access(path.parent, os.W_OK):
        raise ValueError(f"{path}: directory {path.parent} is not writable")
    return path


def textfile_arg(text: str) -> Path:
    """argparse type of --prometheus: refuses a path node_exporter would not read, before anything runs."""
    try:
        return check_path(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_argument(parser) -> None:
    """`--prometheus FILE.prom` for a command (run, accept, burn): checked when the command line is parsed."""
    parser.add_argument("--prometheus", type=textfile_arg, metavar="FILE.prom",
                        help="also write node_exporter textfile metrics to FILE.prom (replaced atomically at the "
                             "end, also after an interruption, with what was measured)")


def export(path: str | os.PathLike, rows: list[dict[str, str]], verdicts=None,
           burn: dict[str, dict[str, int]] | None = None, when: float | None = None) -> bool:
    """The end of a command given --prometheus: write the file (write_textfile), say where; on failure
    say why on stderr and return False (the command then exits non-zero).

    `rows`: the run's rows as results.read_results gives them (text values); `verdicts`: accept's
    CardVerdicts; `burn`: {uuid: {"mismatches": n, "memory_errors": n}}.
    """
    try:
        written = write_textfile(path, rows, verdicts, burn, when)
    except (OSError, ValueError) as e:
        print(f"cardbench: cannot write the Prometheus file {path}: {getattr(e, 'strerror', None) or e}",
              file=sys.stderr)
        return False
    print(f"prometheus: {written}")
    return True


def _card_labels(row: dict[str, str]) -> dict[str, str]:
    return {"uuid": row["device_uuid"], "model": row["device_name"], "host": row["host"],
            "device": row["device_index"] or "cpu"}


def _unix(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def registry_for(rows: list[dict[str, str]], verdicts=None, burn: dict[str, dict[str, int]] | None = None,
                 when: float | None = None):
    """A CollectorRegistry with every cardbench metric for these rows, verdicts and burn counts.

    rows: one run's measurement rows (Results.rows); verdicts: accept's CardVerdict
    list (`.card` is results.card_key, `.verdict`, `.results` with `.check`/`.verdict`);
    burn: {uuid: {"mismatches": n, "memory_errors": n}}; when: the run's start in Unix
    seconds, for cards that have no rows (default: the earliest row, else now).
    """
    from prometheus_client import CollectorRegistry, Gauge

    reg = CollectorRegistry()
    cards: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        cards.setdefault(card_key(r, False), []).append(r)
    labels = {key: _card_labels(card_rows[0]) for key, card_rows in cards.items()}
    by_uuid = {lab["uuid"]: lab for lab in labels.values() if lab["uuid"]}

    def other_card(uuid: str) -> dict[str, str]:
        return {"uuid": uuid, "model": "", "host": "", "device": ""}

    values = {family: Gauge(name, doc, CARD_LABELS + ROW_LABELS, registry=reg)
              for family, (name, doc) in FAMILY_METRICS.items()}
    ratio = Gauge("cardbench_spec_ratio", "Headline over the vendor's dense claim (1.0 = 100%)",
                  CARD_LABELS + ("family",) + ROW_LABELS, registry=reg)
    stamp = Gauge("cardbench_run_timestamp_seconds", "When the run started (its first row), Unix time",
                  CARD_LABELS, registry=reg)
    for key, card_rows in cards.items():
        stamps = [r["timestamp_utc"] for r in card_rows if r["timestamp_utc"]]
        stamp.labels(**labels[key]).set(_unix(min(stamps)) if stamps else (when or time.time()))
        for h in headlines(card_rows):
            if not h.ok or h.family not in values:
                continue
            r = h.row
            if r["unit"] not in TO_BASE_UNIT:
                raise ValueError(f"{h.name}: unit '{r['unit']}' has no base-unit conversion")
            row_labels = {k: r[k] for k in ROW_LABELS}
            values[h.family].labels(**labels[key], **row_labels).set(float(r["value"]) * TO_BASE_UNIT[r["unit"]])
            if r["pct_of_spec"]:
                ratio.labels(**labels[key], family=h.family, **row_labels).set(float(r["pct_of_spec"]) / 100)

    if verdicts:
        check = Gauge("cardbench_accept_check_verdict", "accept verdict per check: 1 PASS, 0 FAIL, -1 INCONCLUSIVE",
                      CARD_LABELS + ("check",), registry=reg)
        overall = Gauge("cardbench_accept_verdict", "accept verdict of the card: 1 PASS, 0 FAIL, -1 INCONCLUSIVE",
                        CARD_LABELS, registry=reg)
        for v in verdicts:
            card = labels.get(v.card) or by_uuid.get(v.card) or other_card(v.card)
            overall.labels(**card).set(VERDICT_VALUES[v.verdict])
            for res in v.results:
                if res.verdict in VERDICT_VALUES:
                    check.labels(**card, check=res.check).set(VERDICT_VALUES[res.verdict])

    if burn:
        mismatches = Gauge("cardbench_burn_mismatches", "burn results that differed from the first GPU's",
                           CARD_LABELS, registry=reg)
        memory_errors = Gauge("cardbench_burn_memory_errors", "burn memory pattern-test errors",
                              CARD_LABELS, registry=reg)
        for uuid, counts in burn.items():
            card = by_uuid.get(uuid) or other_card(uuid)
            mismatches.labels(**card).set(counts.get("mismatches", 0))
            memory_errors.labels(**card).set(counts.get("memory_errors", 0))
            if uuid not in by_uuid:
                stamp.labels(**card).set(when or time.time())
    return reg


def write_textfile(path: str | os.PathLike, rows: list[dict[str, str]], verdicts=None,
                   burn: dict[str, dict[str, int]] | None = None, when: float | None = None) -> Path:
    """Write the metrics to PATH (a .prom file in node_exporter's textfile directory), atomically.

    prometheus_client.write_to_textfile writes PATH.<pid>.<thread> in the same directory
    and renames it over PATH (rename(2) is atomic), so node_exporter never reads a half
    file and a failed write leaves the previous file as it was: every version since 0.16,
    https://github.com/prometheus/client_python/blob/master/prometheus_client/exposition.py
    (from 0.22 a failed write also removes its temporary file; before, the leftover does
    not end in .prom and node_exporter ignores it).
    """
    from prometheus_client import write_to_textfile

    path = check_path(path)
    write_to_textfile(str(path), registry_for(rows, verdicts, burn, when))
    return path
