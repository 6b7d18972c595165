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


def small(r):
    r["size_bytes"] = str(4 * 2**20)  # a working set below 64 MiB: latency-bound


def thresholds(out_json: str) -> dict[tuple[str, str], float]:
    return {(r["key"]["benchmark"], r["key"]["case"]): r["threshold"] for r in json.loads(out_json)["rows"]
            if r["threshold"] is not None}


def test_a_bare_threshold_also_sets_latency_bound_rows(tmp_path, capsys):
    base = variant(tmp_path / "b.csv", spread=0.05, run_id="b", timestamp="2029-01-01T00:00:00+00:00", edit=small)
    new = variant(tmp_path / "n.csv", scale=0.96, spread=0.05, edit=small)
    code, out, _ = run_compare(capsys, base, new, "--format", "json")
    assert code == 0 and set(verdicts(out).values()) == {"same"}  # 4% is inside the built-in 5%
    code, out, _ = run_compare(capsys, base, new, "--format", "json", "--threshold", "3")
    assert code == 1 and set(verdicts(out).values()) == {"slower"} and set(thresholds(out).values()) == {0.03}


def test_a_family_threshold_beats_the_latency_and_bare_ones(tmp_path, capsys):
    base = variant(tmp_path / "b.csv", spread=0.05, run_id="b", timestamp="2029-01-01T00:00:00+00:00", edit=small)
    new = variant(tmp_path / "n.csv", scale=0.96, spread=0.05, edit=small)
    code, out, _ = run_compare(capsys, base, new, "--format", "json", "--threshold", "latency=10,1",
                               "--threshold", "memory=3")
    assert code == 1 and set(verdicts(out).values()) == {"slower"} and set(thresholds(out).values()) == {0.03}
    code, out, _ = run_compare(capsys, base, new, "--format", "json", "--threshold", "latency=10,1")
    assert code == 0 and set(verdicts(out).values()) == {"same"} and set(thresholds(out).values()) == {0.10}


def collective_sweep(r):
    """The real run's rows recast as a collective sweep at 1 MiB: `read` becomes the `peak` summary
    (no size of its own; its params name the size it carries), the others size rows."""
    if r["family"] != "memory":
        return
    r["family"], r["size_bytes"] = "collective", str(2**20)
    if r["benchmark"] == "read":
        r["benchmark"], r["case"], r["size_bytes"] = "all_reduce", "peak", ""
        r["params"] = json.dumps({"peak_case": "size-1MiB", "peak_size_bytes": 2**20})
    else:
        r["case"] = "size-1MiB"


def test_a_peak_row_is_judged_like_the_size_it_summarizes(tmp_path, capsys):
    base = variant(tmp_path / "b.csv", spread=0.05, run_id="b", timestamp="2029-01-01T00:00:00+00:00",
                   edit=collective_sweep)
    new = variant(tmp_path / "n.csv", scale=0.96, spread=0.05, edit=collective_sweep)
    code, out, _ = run_compare(capsys, base, new, "--format", "json")
    assert thresholds(out)[("all_reduce", "peak")] == thresholds(out)[("write", "size-1MiB")] == 0.05
    assert code == 0 and set(verdicts(out).values()) == {"same"}
    code, out, _ = run_compare(capsys, base, new, "--format", "json", "--threshold", "latency=3")
    assert code == 1 and set(verdicts(out).values()) == {"slower"}
    assert thresholds(out)[("all_reduce", "peak")] == 0.03


@pytest.mark.parametrize("value, says", [
    ("memroy=3", "unknown family 'memroy'; families in these runs: memory"),
    ("memory=3,matmul=4", "unknown family 'matmul'; families in these runs: memory"),
    ("abc", "'abc' is not a number"),
    ("-2", "-2% is not a percentage above 0 and below 100"),
    ("0", "0% is not a percentage above 0 and below 100"),
    ("150", "150% is not a percentage above 0 and below 100"),
])
def test_bad_thresholds_exit_2_naming_the_input(tmp_path, capsys, tight_base, value, says):
    code, out, err = run_compare(capsys, tight_base, variant(tmp_path / "n.csv", spread=0.05), "--threshold", value)
    assert code == 2 and out == "" and says in err and err.startswith("cardbench compare: --threshold ")


def test_families_of_both_runs_are_known_to_threshold(tmp_path, capsys, tight_base):
    code, out, err = run_compare(capsys, tight_base, variant(tmp_path / "n.csv", scale=0.96, spread=0.05),
                                 "--format", "json", "--threshold", "memory=5,latency=10")
    assert code == 0 and err == "" and set(verdicts(out).values()) == {"same"}


def test_small_values_and_changes_print_with_significant_digits(tmp_path, capsys):
    base = variant(tmp_path / "b.csv", scale=1e-3, spread=0.05, run_id="b", timestamp="2029-01-01T00:00:00+00:00")
    new = variant(tmp_path / "n.csv", scale=1e-3 * 1.0005, spread=0.05)
    code, out, _ = run_compare(capsys, base, new)
    copy_line = next(line for line in out.splitlines() if line.startswith("memory/copy") and "torch" in line)
    value = float(next(r for r in read_rows(base) if r["benchmark"] == "copy" and r["provider"] == "torch")["value"])
    assert f"{value:.3g} GB/s" in copy_line and "+0.05%" in copy_line and "same" in copy_line
    assert " 0.0 " not in out and "+0.0%" not in out and "±2%" in copy_line
    code, md, _ = run_compare(capsys, base, new, "--format", "markdown")
    assert f"| {value:.3g} GB/s" in md and "+0.05%" in md
    code, js, _ = run_compare(capsys, base, new, "--format", "json")
    row = next(r for r in json.loads(js)["rows"] if r["key"]["benchmark"] == "copy" and r["key"]["provider"] == "torch")
    assert row["baseline"] == value and row["change_pct"] == pytest.approx(0.05, abs=1e-9)  # full precision


def test_fractional_threshold_prints_as_given(tmp_path, capsys, tight_base):
    code, out, _ = run_compare(capsys, tight_base, variant(tmp_path / "n.csv", spread=0.05), "--threshold", "2.5")
    assert code == 0 and "±2.5%" in out and "±2%" not in out


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def all_rows(out_json: str) -> dict[tuple[str, str], dict]:
    return {(r["key"]["benchmark"], r["key"]["provider"]): r for r in json.loads(out_json)["rows"]}


def test_every_pairing_is_listed_with_its_verdict(tmp_path, capsys):
    """Rows in one run only, rows that failed, got fixed or were measured in neither run: each is listed."""
    def base_edit(r):
        if (r["benchmark"], r["provider"]) == ("write", "torch"):
            r.update(status="error", message="CUDA error: out of memory", value="", samples="", p10="", p90="")

    def new_edit(r):
        if (r["benchmark"], r["provider"]) == ("copy", "torch"):
            r.update(status="wrong", message="copy: 3 differ", value="", samples="", p10="", p90="")
    base = variant(tmp_path / "b.csv", spread=0.05, run_id="b", timestamp="2029-01-01T00:00:00+00:00", edit=base_edit,
                   rows=lambda r: r["benchmark"] != "read")
    new = variant(tmp_path / "n.csv", spread=0.05, edit=new_edit, rows=lambda r: r["benchmark"] != "triad")
    code, out, _ = run_compare(capsys, base, new, "--format", "json")
    got = {k: (r["verdict"], r["notes"]) for k, r in all_rows(out).items()}
    assert code == 1 and got == {
        ("copy", "torch"): ("failed", ["now wrong: copy: 3 differ"]),
        ("copy", "triton"): ("not-measured", ["skipped -> skipped"]),
        ("read", "torch"): ("only-new", []), ("read", "triton"): ("only-new", []),
        ("triad", "torch"): ("only-baseline", []), ("triad", "triton"): ("only-baseline", []),
        ("write", "torch"): ("fixed", ["was error: CUDA error: out of memory"]),
        ("write", "triton"): ("not-measured", ["skipped -> skipped"]),
    }
    assert {r["card"] for r in json.loads(out)["rows"]} == {"vm:AMD EPYC"}


def test_context_changes_list_every_value_on_each_side(tmp_path, capsys, tight_base):
    def edit(r):
        r["torch_version"] = ""
        r["driver_version"] = "570.1" if r["benchmark"] in ("copy", "read") else "580.2"
    new = variant(tmp_path / "n.csv", spread=0.05, edit=edit)
    code, out, _ = run_compare(capsys, tight_base, new, "--format", "json")
    assert json.loads(out)["context_changes"] == ["driver_version: (none) -> 570.1, 580.2",
                                                   "torch_version: 2.13.0+cpu -> (none)"]
    later = variant(tmp_path / "later.csv", spread=0.05, timestamp="2031-01-01T00:00:00+00:00")
    code, out, _ = run_compare(capsys, new, later, "--format", "json")
    assert json.loads(out)["context_changes"] == ["driver_version: 570.1, 580.2 -> (none)",
                                                   "torch_version: (none) -> 2.13.0+cpu"]


def test_messages_for_runs_that_cannot_be_compared(tmp_path, capsys, tight_base):
    def other_host(r):
        r["host"] = "elsewhere"
    code, _, err = run_compare(capsys, tight_base, variant(tmp_path / "o.csv", spread=0.05, edit=other_host))
    assert code == 2 and err == ("cardbench compare: no card in common: baseline ['vm:AMD EPYC'], new "
                                 "['elsewhere:AMD EPYC'] (pass --any-card to compare different cards)\n")

    def other_family(r):
        r["family"] = "matmul"
    code, _, err = run_compare(capsys, tight_base, variant(tmp_path / "f.csv", edit=other_family))
    assert code == 2 and err == "cardbench compare: no measurement in common between the two runs\n"
    empty = tmp_path / "empty.csv"
    empty.write_text(REAL_RUN.read_text().splitlines()[0] + "\n")
    code, _, err = run_compare(capsys, tight_base, empty)
    assert code == 2 and err == f"cardbench compare: {empty}: no measurements in this file\n"


def test_threshold_messages_in_full(tmp_path, capsys, tight_base):
    new = variant(tmp_path / "n.csv", spread=0.05)
    code, _, err = run_compare(capsys, tight_base, new, "--threshold", "abc")
    assert code == 2 and err == ("cardbench compare: --threshold abc: 'abc' is not a number; expected PCT, FAMILY=PCT "
                                 "or latency=PCT (percent; repeat the option or separate with commas)\n")
    code, _, err = run_compare(capsys, tight_base, new, "--threshold", "memory=3,matmul=x")
    assert code == 2 and err.startswith("cardbench compare: --threshold memory=3,matmul=x (matmul=x): 'x' is not")

    def two_families(r):
        if r["benchmark"] == "read":
            r["family"] = "collective"
    base = variant(tmp_path / "b2.csv", spread=0.05, run_id="b", timestamp="2029-01-01T00:00:00+00:00", edit=two_families)
    code, _, err = run_compare(capsys, base, variant(tmp_path / "n2.csv", spread=0.05, edit=two_families),
                               "--threshold", "memroy=3.5")
    assert code == 2 and err == ("cardbench compare: --threshold memroy=3.5: unknown family 'memroy'; families in these "
                                 "runs: collective, memory (latency=PCT sets latency-bound rows)\n")


def test_incomplete_runs_are_compared_with_a_warning(tmp_path, capsys, tight_base):
    killed = variant(tmp_path / "killed.csv", spread=0.05, rows=lambda r: r["family"] != "run")

    def interrupted(r):
        if r["family"] == "run":
            r.update(status="error", message="interrupted by SIGINT after 8 rows")
    stopped = variant(tmp_path / "stopped.csv", spread=0.05, edit=interrupted)
    code, out, err = run_compare(capsys, tight_base, killed)
    assert code == 0 and "4 same" in out
    assert err == f"warning: {killed} is an incomplete run (no closing row)\n"
    code, out, err = run_compare(capsys, tight_base, stopped)
    assert code == 0 and err == f"warning: {stopped} is an incomplete run (interrupted by SIGINT after 8 rows)\n"


def test_directory_baseline_skips_the_new_run_itself_and_other_cards(tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()

    def other_host(r):
        r["host"] = "elsewhere"
    variant(runs / "b-mine.csv", scale=0.9, spread=0.05, run_id="mine", timestamp="2029-01-01T00:00:00+00:00")
    variant(runs / "c-other.csv", scale=0.5, spread=0.05, run_id="other", timestamp="2029-06-01T00:00:00+00:00",
            edit=other_host)
    new = variant(runs / "a-new.csv", scale=0.9, spread=0.05)  # inside the directory, listed first
    code, out, _ = run_compare(capsys, runs, new, "--format", "json")
    assert code == 0 and json.loads(out)["baseline"].endswith("b-mine.csv")
    code, out, _ = run_compare(capsys, runs, new, "--format", "json", "--any-card")  # device index: both match
    assert json.loads(out)["baseline"].endswith("c-other.csv") and set(verdicts(out).values()) == {"faster"}


def test_directory_baseline_needs_an_earlier_start(tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    new = variant(tmp_path / "new.csv", spread=0.05)
    variant(runs / "same-start.csv", scale=0.5, spread=0.05, run_id="copy")  # the same start time as NEW
    code, _, err = run_compare(capsys, runs, new)
    assert code == 2 and "no earlier run of the same card (vm:AMD EPYC)" in err
    variant(runs / "x1.csv", spread=0.05, run_id="x1", timestamp="2029-01-01T00:00:00+00:00")
    variant(runs / "x2.csv", spread=0.05, run_id="x2", timestamp="2029-01-01T00:00:00+00:00")  # a copy of x1
    code, out, _ = run_compare(capsys, runs, new, "--format", "json")
    assert code == 0 and json.loads(out)["baseline"].endswith("x1.csv")


def test_no_earlier_run_names_every_card_of_the_new_run(tmp_path, capsys):
    def two_cards(r):
        if r["benchmark"] == "read":
            r["device_uuid"] = "GPU-b"
        elif r["family"] != "run":
            r["device_uuid"] = "GPU-a"
    empty = tmp_path / "none"
    empty.mkdir()
    code, _, err = run_compare(capsys, empty, variant(tmp_path / "n.csv", edit=two_cards))
    assert code == 2 and err.endswith("no earlier run of the same card (GPU-a, GPU-b)\n")
