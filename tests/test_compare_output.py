"""What `cardbench compare` prints, on hand-made comparisons: the table, Markdown and JSON, the summary
line, the worst-first order, the condition notes and the option help."""
import json

import pytest

from bench.cli import main
from bench.commands.compare import Comparison, _conditions, render, summary, table_rows, worst_first
from bench.core.results import Results

BASE, NEW = Results("b.csv", [], True, "", 1), Results("n.csv", [], True, "", 1)


def comp(benchmark="copy", verdict="same", ratio=None, provider="torch", **kw):
    return Comparison(("memory", benchmark, provider, "fp32", "plateau"), "h:cpu", "GB/s",
                      kw.pop("baseline", None), kw.pop("new", None), verdict, ratio, **kw)


SLOWER = comp("copy", "slower", 0.97, baseline=25.6435, new=24.875, ci_low=0.9679, ci_high=0.9721, p_value=1.5e-05,
              threshold=0.02, notes=["a", "b"])
SAME = comp("read", "same", 1.0036, baseline=30.59, new=30.7, ci_low=0.995, ci_high=1.012, p_value=0.3214,
            threshold=0.025)
FAILED = comp("write", "failed", baseline=23.8, notes=["now wrong: 3 differ"])
FIXED = comp("triad", "fixed", new=37.9, notes=["was error: CUDA error: out of memory"])
NOT_MEASURED = comp("read", "not-measured", provider="triton", notes=["skipped -> skipped"])


def test_table_cells_of_measured_failed_and_fixed_rows():
    assert table_rows([SLOWER, SAME, FAILED, FIXED]) == [
        ["memory/copy", "torch", "fp32", "plateau", "25.6 GB/s", "24.9 GB/s", "-3%", "-3.21..-2.79%", "1.5e-05",
         "±2%", "slower", "a; b"],
        ["memory/read", "torch", "fp32", "plateau", "30.6 GB/s", "30.7 GB/s", "+0.36%", "-0.5..+1.2%", "0.32",
         "±2.5%", "same", ""],
        ["memory/write", "torch", "fp32", "plateau", "23.8 GB/s", "", "", "", "", "", "failed", "now wrong: 3 differ"],
        ["memory/triad", "torch", "fp32", "plateau", "", "37.9 GB/s", "", "", "", "", "fixed",
         "was error: CUDA error: out of memory"],
    ]


def test_small_values_print_three_significant_digits_in_every_cell():
    tiny = comp("copy", "faster", 8.53, baseline=0.00312, new=0.0266, ci_low=8.4, ci_high=8.61, p_value=0.0012,
                threshold=0.05)
    assert table_rows([tiny])[0][4:10] == ["0.00312 GB/s", "0.0266 GB/s", "+753.0%", "+740.0..+761.0%", "0.0012", "±5%"]


def test_text_table():
    assert render([FAILED, SLOWER, SAME, NOT_MEASURED], ["torch_version: 1 -> 2"], BASE, NEW, "table").split("\n") == [
        "baseline: b.csv",
        "new:      n.csv",
        "changed:  torch_version: 1 -> 2",
        "",
        "benchmark     provider    dtype    case     baseline    new        change    95% CI         p        threshold    verdict    note",
        "------------  ----------  -------  -------  ----------  ---------  --------  -------------  -------  -----------  ---------  -------------------",
        "memory/write  torch       fp32     plateau  23.8 GB/s                                                             failed     now wrong: 3 differ",
        "memory/copy   torch       fp32     plateau  25.6 GB/s   24.9 GB/s  -3%       -3.21..-2.79%  1.5e-05  ±2%          slower     a; b",
        "memory/read   torch       fp32     plateau  30.6 GB/s   30.7 GB/s  +0.36%    -0.5..+1.2%    0.32     ±2.5%        same",
        "",
        "1 same, 0 faster, 1 slower, 0 inconclusive, 1 failed, 1 not-measured",
    ]


def test_unchanged_environment_is_said():
    assert render([SLOWER], [], BASE, NEW, "table").split("\n")[:4] == [
        "baseline: b.csv", "new:      n.csv", "changed:  nothing in the recorded environment", ""]


def test_markdown_for_a_ticket():
    assert render([FAILED, SLOWER, SAME, NOT_MEASURED], ["torch_version: 1 -> 2"], BASE, NEW, "markdown").split("\n") == [
        "## cardbench compare",
        "",
        "- baseline: b.csv",
        "- new:      n.csv",
        "- changed:  torch_version: 1 -> 2",
        "",
        "| benchmark    | provider   | dtype   | case    | baseline   | new       | change   | 95% CI        | p       | threshold   | verdict   | note                |",
        "|--------------|------------|---------|---------|------------|-----------|----------|---------------|---------|-------------|-----------|---------------------|",
        "| memory/write | torch      | fp32    | plateau | 23.8 GB/s  |           |          |               |         |             | failed    | now wrong: 3 differ |",
        "| memory/copy  | torch      | fp32    | plateau | 25.6 GB/s  | 24.9 GB/s | -3%      | -3.21..-2.79% | 1.5e-05 | ±2%         | slower    | a; b                |",
        "| memory/read  | torch      | fp32    | plateau | 30.6 GB/s  | 30.7 GB/s | +0.36%   | -0.5..+1.2%   | 0.32    | ±2.5%       | same      |                     |",
        "",
        "**1 same, 0 faster, 1 slower, 0 inconclusive, 1 failed, 1 not-measured**",
    ]


def test_json_keeps_every_row_and_full_precision():
    out = render([SLOWER, NOT_MEASURED], ["torch_version: 1 -> 2"], BASE, NEW, "json")
    assert out.startswith('{\n  "baseline": "b.csv",\n  "new": "n.csv",\n')  # indented for reading
    doc = json.loads(out)
    assert set(doc) == {"baseline", "new", "summary", "context_changes", "rows"}
    assert doc["summary"] == "0 same, 0 faster, 1 slower, 0 inconclusive, 1 not-measured"
    assert doc["context_changes"] == ["torch_version: 1 -> 2"]
    row = doc["rows"][0]
    assert row["key"] == {"family": "memory", "benchmark": "copy", "provider": "torch", "dtype": "fp32", "case": "plateau"}
    assert (row["baseline"], row["new"], row["ci_low"], row["p_value"], row["threshold"]) == (25.6435, 24.875, 0.9679, 1.5e-05, 0.02)
    assert row["change_pct"] == pytest.approx(-3.0, abs=1e-12) and row["card"] == "h:cpu"
    assert doc["rows"][1]["verdict"] == "not-measured"


def test_summary_counts_every_verdict_and_always_the_four_main_ones():
    assert summary([]) == "0 same, 0 faster, 0 slower, 0 inconclusive"
    verdicts = ["same", "faster", "slower", "slower", "inconclusive", "failed", "fixed", "only-baseline", "only-new",
                "not-measured"]
    assert summary([comp(verdict=v) for v in verdicts]) == (
        "1 same, 1 faster, 2 slower, 1 inconclusive, 1 failed, 1 fixed, 1 only-baseline, 1 only-new, 1 not-measured")


def test_worst_first():
    rows = [comp("fixed", "fixed"), comp("f2", "faster", 1.2), comp("s1", "same", 1.0), comp("x1", "failed"),
            comp("i2", "inconclusive", 1.05), comp("o1", "only-new"), comp("f1", "faster", 1.03),
            comp("s2", "same", 1.04), comp("w2", "slower", 0.95), comp("i1", "inconclusive", 0.85),
            comp("x2", "failed"), comp("w1", "slower", 0.9)]
    assert [c.key[1] for c in worst_first(rows)] == [
        "x1", "x2", "w1", "w2", "i1", "i2", "s1", "s2", "f1", "f2", "fixed", "o1"]


# --- notes on the conditions of a pair of rows ---------------------------------------------------

def cond(reasons="", names="", clock=""):
    return {"clocks_event_reasons": reasons, "clocks_event_reason_names": names, "sm_clock_mhz_mean": clock}


@pytest.mark.parametrize("base, new, notes", [
    (cond(), cond("0x40", "hw_thermal_slowdown"), ["throttle reasons differ: baseline none, new hw_thermal_slowdown"]),
    (cond("0x40", "hw_thermal_slowdown"), cond("0x0"), ["throttle reasons differ: baseline hw_thermal_slowdown, new none"]),
    (cond("0x40", "hw_thermal_slowdown"), cond("0x40", "hw_thermal_slowdown"), []),  # throttled alike: comparable
    (cond("0x1", "gpu_idle"), cond("0x0"), []),  # idle is not a slowdown
    (cond(clock="1980"), cond(clock="1700"), ["mean SM clock 1980 -> 1700 MHz"]),
    (cond(clock="1000"), cond(clock="1030"), []),  # exactly 3% apart: not beyond
    (cond(clock="1000"), cond(clock="1031"), ["mean SM clock 1000 -> 1031 MHz"]),
    (cond(clock="1980"), cond(clock="1950"), []),
    (cond(clock="1"), cond(clock="2"), ["mean SM clock 1 -> 2 MHz"]),
    (cond(clock="0"), cond(clock="1700"), []),  # no clock recorded (CPU): nothing to compare
    (cond(clock="1980"), cond(), []),
    (cond(), cond(clock="1980"), []),
])
def test_condition_notes(base, new, notes):
    assert _conditions(base, new) == notes


# --- the option help states the threshold rule ---------------------------------------------------

def test_help_states_the_arguments_and_the_threshold_rule(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "500")  # argparse wraps to the terminal: one line per option here
    with pytest.raises(SystemExit) as e:
        main(["compare", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert ("baseline a results CSV, or a directory of runs (the same card's latest run before NEW) "
            "new the results CSV to judge") in text
    assert ("--threshold [FAMILY=]PCT change that counts, in percent (repeat or comma-separate): FAMILY=PCT for "
            "every row of a family, else latency=PCT for latency-bound rows (latency units or working sets under "
            "64 MiB), else a bare PCT for every row; built in: 5 latency-bound, 2 the others "
            "--format {table,markdown,json} "
            "--any-card compare runs of different cards (rows matched by device index)") in text
    assert text.endswith("(rows matched by device index)")


def test_format_choices(capsys, tmp_path):
    from bench.cli import parser
    assert parser().parse_args(["compare", "a.csv", "b.csv"]).format == "table"
    assert parser().parse_args(["compare", "a.csv", "b.csv", "--format", "table"]).format == "table"
    with pytest.raises(SystemExit) as e:
        main(["compare", "a.csv", "b.csv", "--format", "xml"])
    assert e.value.code == 2 and "invalid choice: 'xml'" in capsys.readouterr().err
