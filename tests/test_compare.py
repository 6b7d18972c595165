"""`cardbench compare` on a real CPU run with controlled changes applied to its samples."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.core.results import format_samples, parse_samples

REAL_RUN = Path(__file__).parent / "fixtures" / "results_schema_v1.csv"


def variant(path: Path, scale: float = 1.0, spread: float = 1.0, run_id: str = "new000000000",
            timestamp: str = "2030-01-01T00:00:00+00:00", edit=None, rows=None) -> Path:
    """A copy of the real run whose ok rows' samples are scaled (speed) and their spread around
    the median multiplied by `spread`; value, p10 and p90 recomputed from the new samples."""
    with open(REAL_RUN, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header, data = reader.fieldnames, list(reader)
    for r in data:
        r["run_id"], r["timestamp_utc"] = run_id, timestamp
        if r["status"] == "ok" and r["family"] != "run":  # the closing row has no samples
            s = np.array(parse_samples(r["samples"]))
            med = np.median(s)
            s = (med + (s - med) * spread) * scale
            r["samples"] = format_samples(list(s))
            r["value"] = repr(float(np.median(s)))
            r["p10"], r["p90"] = repr(float(np.percentile(s, 10))), repr(float(np.percentile(s, 90)))
        if edit:
            edit(r)
    if rows is not None:
        data = [r for r in data if rows(r)]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(data)
    return path


def run_compare(capsys, *args):
    code = main(["compare", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def tight_base(tmp_path):
    return variant(tmp_path / "base.csv", spread=0.05, run_id="base00000000", timestamp="2029-01-01T00:00:00+00:00")


def verdicts(out_json: str) -> dict[str, str]:
    return {r["key"]["benchmark"]: r["verdict"] for r in json.loads(out_json)["rows"] if r["key"]["provider"] == "torch"}


def test_ten_percent_slower_with_tight_samples_is_slower_and_exit_1(tmp_path, capsys, tight_base):
    new = variant(tmp_path / "new.csv", scale=0.9, spread=0.05)
    code, out, _ = run_compare(capsys, tight_base, new, "--format", "json")
    assert code == 1
    assert set(verdicts(out).values()) == {"slower"}
    row = json.loads(out)["rows"][0]
    assert row["change_pct"] == pytest.approx(-10, abs=0.01) and row["ci_high"] < 0.98


def test_one_percent_change_is_same_and_exit_0(tmp_path, capsys, tight_base):
    code, out, _ = run_compare(capsys, tight_base, variant(tmp_path / "new.csv", scale=0.99, spread=0.05),
                               "--format", "json")
    assert code == 0 and set(verdicts(out).values()) == {"same"}


def test_wide_noisy_samples_are_inconclusive_not_a_regression(tmp_path, capsys):
    base = variant(tmp_path / "base.csv", spread=3.0, run_id="b", timestamp="2029-01-01T00:00:00+00:00")
    code, out, _ = run_compare(capsys, base, variant(tmp_path / "new.csv", scale=0.97, spread=3.0),
                               "--format", "json")
    assert code == 0 and set(verdicts(out).values()) == {"inconclusive"}


def test_faster_is_faster_and_exit_0(tmp_path, capsys, tight_base):
    code, out, _ = run_compare(capsys, tight_base, variant(tmp_path / "new.csv", scale=1.1, spread=0.05),
                               "--format", "json")
    assert code == 0 and set(verdicts(out).values()) == {"faster"}


def test_environment_changes_and_throttling_are_listed(tmp_path, capsys, tight_base):
    def edit(r):
        r["torch_version"], r["driver_version"] = "9.9.9", "999.1"
        if r["benchmark"] == "copy":
            r["clocks_event_reasons"], r["clocks_event_reason_names"] = "0x40", "hw_thermal_slowdown"
    code, out, _ = run_compare(capsys, tight_base, variant(tmp_path / "new.csv", scale=0.9, spread=0.05, edit=edit))
    assert code == 1
    assert "torch_version: 2.13.0+cpu -> 9.9.9" in out and "driver_version: (none) -> 999.1" in out
    copy_line = next(line for line in out.splitlines() if line.startswith("memory/copy") and "torch" in line)
    assert "throttle reasons differ" in copy_line and "hw_thermal_slowdown" in copy_line


def test_rows_in_one_side_only_are_listed(tmp_path, capsys, tight_base):
    new = variant(tmp_path / "new.csv", spread=0.05, rows=lambda r: r["benchmark"] != "triad")
    code, out, _ = run_compare(capsys, tight_base, new, "--format", "json")
    got = {(r["key"]["benchmark"], r["key"]["provider"]): r["verdict"] for r in json.loads(out)["rows"]}
    assert got[("triad", "torch")] == "only-baseline"


def test_ok_row_that_now_fails_is_a_regression(tmp_path, capsys, tight_base):
    def edit(r):
        if r["benchmark"] == "copy" and r["provider"] == "torch":
            r.update(status="wrong", message="copy: 3 differ", value="", samples="", p10="", p90="")
    code, out, _ = run_compare(capsys, tight_base, variant(tmp_path / "new.csv", spread=0.05, edit=edit))
    assert code == 1 and "failed" in out and "copy: 3 differ" in out


def test_markdown_for_a_ticket(tmp_path, capsys, tight_base):
    code, out, _ = run_compare(capsys, tight_base, variant(tmp_path / "new.csv", scale=0.9, spread=0.05),
                               "--format", "markdown")
    assert out.startswith("## cardbench compare") and "| memory/copy" in out and "**0 same, 0 faster, 4 slower" in out


def test_directory_baseline_picks_the_same_cards_latest_earlier_run(tmp_path, capsys):
    history = tmp_path / "history"
    history.mkdir()
    variant(history / "old.csv", scale=0.5, spread=0.05, run_id="old", timestamp="2028-01-01T00:00:00+00:00")
    variant(history / "prev.csv", scale=0.9, spread=0.05, run_id="prev", timestamp="2029-01-01T00:00:00+00:00")
    variant(history / "later.csv", scale=2.0, spread=0.05, run_id="later", timestamp="2031-01-01T00:00:00+00:00")
    (history / "junk.csv").write_text("not,a,cardbench,file\n")
    new = variant(tmp_path / "new.csv", scale=0.9, spread=0.05)
    code, out, err = run_compare(capsys, history, new, "--format", "json")
    assert json.loads(out)["baseline"].endswith("prev.csv") and set(verdicts(out).values()) == {"same"}
    assert "junk.csv" in err  # a damaged file in the history is named and skipped


def test_thresholds_per_family_and_for_latency_bound_rows(tmp_path, capsys, tight_base):
    new = variant(tmp_path / "new.csv", scale=0.97, spread=0.05)
    code, out, _ = run_compare(capsys, tight_base, new, "--format", "json")
    assert set(verdicts(out).values()) == {"slower"}  # 3% beyond the 2% default
    code, out, _ = run_compare(capsys, tight_base, new, "--format", "json", "--threshold", "memory=5")
    assert code == 0 and set(verdicts(out).values()) == {"same"}

    def small(r):
        r["size_bytes"] = str(4 * 2**20)  # a working set below 64 MiB is latency-bound: 5%
    base_small = variant(tmp_path / "bs.csv", spread=0.05, run_id="b", timestamp="2029-01-01T00:00:00+00:00",
                         edit=small)
    code, out, _ = run_compare(capsys, base_small, variant(tmp_path / "ns.csv", scale=0.97, spread=0.05, edit=small),
                               "--format", "json")
    assert set(verdicts(out).values()) == {"same"}


def test_bad_inputs_exit_2_with_a_clear_message(tmp_path, capsys, tight_base):
    code, _, err = run_compare(capsys, tight_base, tmp_path / "missing.csv")
    assert code == 2 and "missing.csv" in err and "cannot read" in err
    damaged = tmp_path / "damaged.csv"
    damaged.write_text(REAL_RUN.read_text().replace(",ok,", ",great,", 1))
    code, _, err = run_compare(capsys, tight_base, damaged)
    assert code == 2 and "damaged.csv, line 3, column 'status'" in err

    def other_host(r):
        r["host"] = "elsewhere"
    other = variant(tmp_path / "other.csv", spread=0.05, edit=other_host)
    code, _, err = run_compare(capsys, tight_base, other)
    assert code == 2 and "no card in common" in err and "--any-card" in err
    code, _, _ = run_compare(capsys, tight_base, other, "--any-card")
    assert code == 0

    def other_family(r):
        r["family"] = "matmul"
    code, _, err = run_compare(capsys, tight_base, variant(tmp_path / "fam.csv", edit=other_family))
    assert code == 2 and "no measurement in common" in err
    code, _, err = run_compare(capsys, tight_base, tight_base, "--threshold", "memory=abc")
    assert code == 2 and "--threshold memory=abc" in err
    empty = tmp_path / "no-history"
    empty.mkdir()
    code, _, err = run_compare(capsys, empty, variant(tmp_path / "n2.csv"))
    assert code == 2 and "no earlier run of the same card" in err
