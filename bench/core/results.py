"""Versioned results CSVs: one file per run, appended row by row, never rewritten.

results/SCHEMA.md documents every column. The reader accepts every schema
version ever released and rejects a foreign or damaged file with a message
naming the file, the line and the column.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

SCHEMA_VERSION = 2
SUPPORTED_SCHEMAS = (1, 2)
STATUSES = ("ok", "wrong", "unsupported", "skipped", "error")

# The row that closes a run. A file without it is incomplete (killed, crashed).
END_FAMILY, END_BENCHMARK = "run", "end"

# Column order of the current schema. The first block is fixed because users script
# against it; the rest is provenance and telemetry.
COLUMNS = [
    "schema_version", "run_id", "timestamp_utc", "host",
    "device_index", "device_name", "device_uuid", "driver_version",
    "family", "benchmark", "provider", "dtype", "case",
    "metric", "unit", "value", "samples", "p10", "p90", "status", "message",
    # the measurement
    "size_bytes", "work", "work_unit", "time_s", "n_samples", "calls_per_sample", "timer", "params",
    # the claim it is normalized against (bench/core/specs.toml or --specs), and the NVML-derived peak
    "spec_entry", "spec_figure", "spec_value", "spec_unit", "spec_source", "pct_of_spec",
    "derived_peak", "pct_of_derived",
    # telemetry sampled during the timed window
    "sm_clock_mhz_mean", "sm_clock_mhz_min", "mem_clock_mhz_mean",
    "power_w_mean", "power_w_max", "temp_c_max",
    "clocks_event_reasons", "clocks_event_reason_names", "telemetry_samples",
    "pcie_gen_current", "pcie_width_current",
    # energy over the timed window (NVML's total-energy counter; schema 2)
    "energy_j", "energy_window_s", "joules_per_call", "value_per_watt",
    # the card
    "device_serial", "board_part_number", "vbios_version", "pci_bus_id", "pci_device_id",
    "compute_capability", "sm_count", "l2_cache_bytes", "memory_total_bytes",
    "mem_bus_width_bits", "mem_clock_max_mhz", "mem_peak_bytes_per_s", "sm_clock_max_mhz",
    "power_limit_w", "persistence_mode", "mig_mode", "ecc_mode",
    "ecc_errors_uncorrected", "ecc_errors_corrected", "ecc_errors_uncorrected_aggregate",
    "remapped_rows_correctable", "remapped_rows_uncorrectable",
    "remapped_rows_pending", "remapped_rows_failure",
    "pcie_gen_max", "pcie_width_max", "pcie_replay_count", "compute_processes",
    # the run
    "cpu_model", "cpu_cores", "os", "python_version", "cuda_driver_version",
    "cuda_runtime_version", "torch_version", "triton_version", "nccl_version",
    "cardbench_version", "cardbench_commit", "profile", "command",
]

ENERGY_COLUMNS = ["energy_j", "energy_window_s", "joules_per_call", "value_per_watt"]
NUMERIC = {"value", "p10", "p90", "size_bytes", "work", "time_s",
           "spec_value", "pct_of_spec", "derived_peak", "pct_of_derived", *ENERGY_COLUMNS}
INTEGER = {"schema_version", "n_samples", "calls_per_sample"}
# Schema 2 added the energy columns; a schema 1 file reads with them empty.
REQUIRED_BY_SCHEMA = {1: [c for c in COLUMNS if c not in ENERGY_COLUMNS], 2: COLUMNS}
# `cardbench burn` writes its NVML timeline beside the results file: <results stem>.timeline.csv.
TIMELINE_SUFFIX = ".timeline.csv"

# Spreadsheets execute a cell that starts with one of these (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class ResultsFileError(ValueError):
    """A results file that is not a valid cardbench CSV; names file, line, column."""

    def __init__(self, path: str | os.PathLike, line: int | None, column: str | None, problem: str):
        where = str(path)
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column '{column}'"
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.column, self.problem = str(path), line, column, problem


def _cell(name: str, value: object) -> str:
    """One CSV cell: floats in full precision, text fields safe from formula injection."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    text = str(value)
    if name not in NUMERIC and text.startswith(_FORMULA_START) and not _NUMBER.match(text):
        return "'" + text
    return text


def format_samples(samples: list[float]) -> str:
    return ";".join(repr(float(s)) for s in samples)


def parse_samples(text: str) -> list[float]:
    return [float(s) for s in text.split(";")] if text else []


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40] or "unknown"


def results_path(out_dir: Path, device_label: str, run_id: str, when: datetime) -> Path:
    """`<device>_<UTC time>_<host>_<run id>.csv`: two runs never collide."""
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    name = f"{_slug(device_label)}_{stamp}_{_slug(socket.gethostname())}_{run_id}.csv"
    return out_dir / name


class ResultsWriter:
    """Appends rows to a new CSV as each measurement finishes, fsync'd, never rewritten."""

    def __init__(self, path: Path, run_fields: dict[str, str]):
        self.path = path
        self.run_fields = run_fields
        self.rows_written = 0
        self._lock = threading.RLock()
        path.parent.mkdir(parents=True, exist_ok=True)
        # "x": refuse to touch a file that exists, so a run never overwrites another.
        self._file = open(path, "x", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=COLUMNS, extrasaction="raise")
        self._writer.writeheader()
        self._sync()

    def write(self, row: dict[str, object]) -> None:
        with self._lock:  # the hang watchdog may close the file from its own thread
            self._write(row)

    def _write(self, row: dict[str, object]) -> None:
        full = {c: "" for c in COLUMNS}
        full.update(self.run_fields)
        full.update(row)
        full["schema_version"] = SCHEMA_VERSION
        full["timestamp_utc"] = full.get("timestamp_utc") or utc_now()
        self._writer.writerow({c: _cell(c, full[c]) for c in COLUMNS})
        self._sync()
        self.rows_written += 1

    def close(self, status: str = "ok", message: str = "complete") -> None:
        """Write the closing row; a file without it reads as incomplete."""
        with self._lock:
            if self._file.closed:
                return
            self._close(status, message)

    def _close(self, status: str, message: str) -> None:
        self._write({
            "family": END_FAMILY, "benchmark": END_BENCHMARK, "provider": "cardbench",
            "metric": "rows", "unit": "count", "value": float(self.rows_written),
            "status": status, "message": message,
        })
        self._file.close()

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


@dataclass
class Results:
    path: str
    rows: list[dict[str, str]]  # measurement rows (the closing row removed)
    complete: bool  # the closing row is present and says the run finished
    end_message: str  # why the run ended ("complete", "interrupted by SIGINT", "" when killed)
    schema_version: int

    def frame(self):
        """The rows as a pandas DataFrame with numeric columns converted."""
        import pandas as pd  # heavy import kept out of the timing path

        df = pd.DataFrame(self.rows, columns=list(self.rows[0]) if self.rows else COLUMNS)
        for c in NUMERIC | INTEGER:
            if c in df:
                df[c] = pd.to_numeric(df[c].replace("", None), errors="raise")
        return df


def read_results(path: str | os.PathLike) -> Results:
    """Read and validate one cardbench results CSV."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ResultsFileError(path, None, None, f"cannot read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ResultsFileError(path, None, None, f"not UTF-8 text (byte {e.start}); not a cardbench results file") from None
    if "\x00" in text:
        raise ResultsFileError(path, None, None, "contains NUL bytes; not a cardbench results file")
    # Rows are written whole and fsync'd, but a machine that dies mid-write can
    # leave a partial last line: drop it and report the file as incomplete.
    torn = ""
    if text and not text.endswith("\n") and "\n" in text:
        text, torn = text[: text.rindex("\n") + 1], text[text.rindex("\n") + 1:]
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ResultsFileError(path, 1, None, "empty file; not a cardbench results file") from None
    except csv.Error as e:
        raise ResultsFileError(path, 1, None, f"malformed CSV: {e}") from None
    if "schema_version" not in header:
        raise ResultsFileError(path, 1, None, "no 'schema_version' column; not a cardbench results file")
    rows: list[dict[str, str]] = []
    version: int | None = None
    end: dict[str, str] | None = None
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise ResultsFileError(path, reader.line_num, None, f"malformed CSV: {e}") from None
        line = reader.line_num
        if not fields:
            continue
        if end is not None:
            raise ResultsFileError(path, line, None, "rows after the run's closing row")
        if len(fields) != len(header):
            raise ResultsFileError(
                path, line, None,
                f"{len(fields)} fields, the header has {len(header)} (truncated or damaged row)",
            )
        row = {**dict.fromkeys(COLUMNS, ""), **dict(zip(header, fields))}  # older schemas: newer columns empty
        row_version = _check_version(path, line, row["schema_version"])
        if version is None:
            version = row_version
            _check_header(path, header, version)
        elif row_version != version:
            raise ResultsFileError(path, line, "schema_version", f"{row_version} differs from {version} earlier in the file")
        _check_row(path, line, row)
        if row["family"] == END_FAMILY and row["benchmark"] == END_BENCHMARK:
            end = row
        else:
            rows.append(row)
    if torn and end is not None:
        raise ResultsFileError(path, reader.line_num + 1, None, "text after the run's closing row")
    if version is None:
        # Killed before its first row: a valid header and nothing else is an empty, incomplete run,
        # of the schema whose columns the header has.
        fitting = [v for v in SUPPORTED_SCHEMAS if set(REQUIRED_BY_SCHEMA[v]) == set(header)]
        version = max(fitting or SUPPORTED_SCHEMAS)
        _check_header(path, header, version)
    complete = end is not None and end["status"] == "ok"
    message = end["message"] if end else ("last row torn (the run died while writing it)" if torn else "")
    return Results(str(path), rows, complete, message, version)


def _whole(text: str) -> int | None:
    """A count written as a whole float ("10.0", as pandas writes an integer column with gaps), else None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() and value >= 0 else None


def _check_version(path: Path, line: int, text: str) -> int:
    version = _whole(text) if not text.isdigit() else int(text)
    if version is None:
        raise ResultsFileError(path, line, "schema_version", f"'{text}' is not an integer")
    if version > max(SUPPORTED_SCHEMAS):
        raise ResultsFileError(
            path, line, "schema_version",
            f"schema {version} was written by a newer cardbench (this one reads {', '.join(map(str, SUPPORTED_SCHEMAS))}); upgrade cardbench",
        )
    if version not in SUPPORTED_SCHEMAS:
        raise ResultsFileError(path, line, "schema_version", f"unknown schema version {version}")
    return version


def _check_header(path: Path, header: list[str], version: int) -> None:
    missing = [c for c in REQUIRED_BY_SCHEMA[version] if c not in header]
    if missing:
        raise ResultsFileError(path, 1, missing[0], f"missing column(s) for schema {version}: {', '.join(missing)}")
    extra = [c for c in header if c not in REQUIRED_BY_SCHEMA[version]]
    if extra:
        raise ResultsFileError(path, 1, extra[0], f"unexpected column(s) for schema {version}: {', '.join(extra)}")
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise ResultsFileError(path, 1, duplicated[0], "duplicated column")


def _check_row(path: Path, line: int, row: dict[str, str]) -> None:
    status = row["status"]
    if status not in STATUSES:
        raise ResultsFileError(path, line, "status", f"'{status}' is not one of {', '.join(STATUSES)}")
    for column in sorted(NUMERIC):
        text = row[column]
        if text and not _is_float(text):
            raise ResultsFileError(path, line, column, f"'{text[:40]}' is not a number")
    for column in ("n_samples", "calls_per_sample"):
        if row[column] and not row[column].isdigit():
            count = _whole(row[column])
            if count is None:
                raise ResultsFileError(path, line, column, f"'{row[column][:40]}' is not a count")
            row[column] = str(count)  # pandas writes an integer column with gaps as 10.0
    if status == "ok" and not row["value"]:
        raise ResultsFileError(path, line, "value", "empty although status is 'ok'")
    if status != "ok" and row["value"] and row["family"] != END_FAMILY:
        raise ResultsFileError(path, line, "value", f"has a value although status is '{status}' (only 'ok' rows carry one)")
    try:
        parse_samples(row["samples"])
    except ValueError:
        raise ResultsFileError(path, line, "samples", "not a ';'-separated list of numbers") from None


def _is_float(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return not math.isnan(value)


def is_timeline(path: str | os.PathLike) -> bool:
    """A burn timeline (<results stem>.timeline.csv), not a results file."""
    return str(path).endswith(TIMELINE_SUFFIX)


def results_files(folder: Path) -> list[Path]:
    """Every results CSV under `folder`, sorted; burn timelines beside them are left out."""
    return sorted(p for p in Path(folder).rglob("*.csv") if not is_timeline(p))


def timeline_path(results_file: str | os.PathLike) -> Path:
    """Where `cardbench burn` writes the timeline of a results file."""
    path = Path(results_file)
    return path.with_name(path.stem + TIMELINE_SUFFIX)


def params_of(row: dict[str, str]) -> dict:
    """A row's `params` JSON as a dict: {} when empty, not JSON or not an object."""
    try:
        value = json.loads(row.get("params") or "{}")
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def device_of(row: dict[str, str]) -> str:
    """The device a row was measured on, as people write it: `cuda:0`, or `cpu` in CPU mode."""
    return "cpu" if row.get("device_index") in ("", None) else f"cuda:{row['device_index']}"


def card_key(row: dict[str, str], any_card: bool) -> str:
    """Which card a row belongs to: UUID, else serial, else host and name (CPU mode)."""
    if any_card:
        return f"device {row['device_index'] or 'cpu'}"
    return row["device_uuid"] or row["device_serial"] or f"{row['host']}:{row['device_name']}"
