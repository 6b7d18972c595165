"""Results CSV: round trip, every schema fixture, and clear errors for damaged files."""
from pathlib import Path

import pytest

from bench.core import results
from bench.core.results import COLUMNS, ResultsFileError, ResultsWriter, read_results

FIXTURES = Path(__file__).parent / "fixtures"


def ok_row(**kw):
    row = {
        "family": "memory", "benchmark": "copy", "provider": "torch", "dtype": "fp32", "case": "plateau",
        "metric": "bandwidth", "unit": "GB/s", "value": 1234.5678901234, "samples": "1200.0;1234.5678901234;1300.25",
        "p10": 1206.9, "p90": 1287.1, "status": "ok", "size_bytes": 2**29, "work": 2.0**29,
        "work_unit": "B", "time_s": 2.0**29 / 1234.5678901234e9, "n_samples": 3, "timer": "perf_counter",
    }
    row.update(kw)
    return row


def write_run(path, rows, close=True, **close_kw):
    w = ResultsWriter(path, {"run_id": "abc123def456", "host": "h", "command": "cardbench run"})
    for r in rows:
        w.write(r)
    if close:
        w.close(**close_kw)
    else:
        w._file.close()  # what a killed process leaves: rows, no closing row
    return path


def test_round_trip_keeps_full_precision_and_samples(tmp_path):
    path = write_run(tmp_path / "r.csv", [ok_row(), ok_row(benchmark="read", status="skipped", value=None,
                                                          samples="", message="not here")])
    res = read_results(path)
    assert res.complete and res.end_message == "complete" and res.schema_version == results.SCHEMA_VERSION
    assert len(res.rows) == 2
    assert float(res.rows[0]["value"]) == 1234.5678901234
    assert results.parse_samples(res.rows[0]["samples"]) == [1200.0, 1234.5678901234, 1300.25]
    df = res.frame()
    assert list(df.columns) == COLUMNS
    assert df.loc[0, "value"] == 1234.5678901234
    assert df.loc[1, "status"] == "skipped" and df.loc[1, "value"] != df.loc[1, "value"]  # NaN
    assert (df["run_id"] == "abc123def456").all()


def test_writer_refuses_to_overwrite_an_existing_file(tmp_path):
    path = write_run(tmp_path / "r.csv", [ok_row()])
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        ResultsWriter(path, {})
    assert path.read_bytes() == before


def test_file_without_closing_row_reads_as_incomplete(tmp_path):
    res = read_results(write_run(tmp_path / "r.csv", [ok_row()], close=False))
    assert not res.complete and res.end_message == "" and len(res.rows) == 1


def test_interrupted_run_is_marked_incomplete_with_reason(tmp_path):
    res = read_results(write_run(tmp_path / "r.csv", [ok_row()], status="error",
                                 message="interrupted by SIGINT after 1 rows"))
    assert not res.complete and "SIGINT" in res.end_message


def test_text_cells_cannot_become_formulas(tmp_path):
    path = write_run(tmp_path / "r.csv", [ok_row(message="=HYPERLINK(\"x\")", value=-0.0 + 5.0)])
    res = read_results(path)
    assert res.rows[0]["message"].startswith("'=")


def test_every_released_schema_fixture_reads():
    fixtures = sorted(FIXTURES.glob("results_schema_v*.csv"))
    assert [f.name for f in fixtures] == [f"results_schema_v{v}.csv" for v in results.SUPPORTED_SCHEMAS]
    for f in fixtures:
        res = read_results(f)
        assert res.complete and res.rows
        assert any(r["status"] == "ok" for r in res.rows)


def _damage(tmp_path, edit):
    good = write_run(tmp_path / "good.csv", [ok_row(), ok_row(benchmark="write")])
    lines = good.read_text().splitlines(keepends=True)
    bad = tmp_path / "bad.csv"
    bad.write_text("".join(edit(lines)))
    return bad


def _error(path) -> ResultsFileError:
    with pytest.raises(ResultsFileError) as info:
        read_results(path)
    assert str(path) in str(info.value) and info.value.path == str(path)
    return info.value


def test_truncated_row_inside_the_file_names_line(tmp_path):
    bad = _damage(tmp_path, lambda lines: lines[:2] + [lines[2][: len(lines[2]) // 3] + "\n"] + lines[3:])
    e = _error(bad)
    assert e.line == 3 and "fields" in e.problem


def test_torn_last_row_reads_as_incomplete_without_it(tmp_path):
    torn = _damage(tmp_path, lambda lines: lines[:2] + [lines[2][: len(lines[2]) // 3]])
    res = read_results(torn)
    assert not res.complete and len(res.rows) == 1 and "torn" in res.end_message


@pytest.mark.parametrize("extra, line, words", [
    (lambda lines: [lines[2]], 5, "rows after the run's closing row"),  # a row appended to a finished run
    (lambda lines: [lines[3]], 5, "rows after the run's closing row"),  # a second closing row
    (lambda lines: lines, 5, "rows after the run's closing row"),  # two runs' files concatenated
    (lambda lines: [lines[2][: len(lines[2]) // 3]], 5, "text after the run's closing row"),  # torn, no newline
])
def test_anything_after_the_closing_row_is_rejected_not_read_as_complete(tmp_path, extra, line, words):
    bad = _damage(tmp_path, lambda lines: lines + extra(lines))
    e = _error(bad)
    assert e.line == line and e.problem == words


def test_blank_lines_after_the_closing_row_are_harmless(tmp_path):
    res = read_results(_damage(tmp_path, lambda lines: lines + ["\r\n", "\r\n"]))
    assert res.complete and len(res.rows) == 2


def test_non_numeric_value_names_line_and_column(tmp_path):
    def edit(lines):
        lines[2] = lines[2].replace("1234.5678901234,", "fast,", 1)
        return lines
    e = _error(_damage(tmp_path, edit))
    assert (e.line, e.column) == (3, "value") and "'fast' is not a number" in str(e)


def test_missing_column_is_named(tmp_path):
    def edit(lines):
        return [",".join(l.rstrip("\r\n").split(",")[:-1]) + "\n" for l in lines]  # drop the last column
    e = _error(_damage(tmp_path, edit))
    assert e.line == 1 and e.column == COLUMNS[-1]


def test_extra_column_is_named(tmp_path):
    def edit(lines):
        return [lines[0].rstrip("\r\n") + ",bonus\n"] + [l.rstrip("\r\n") + ",1\n" for l in lines[1:]]
    e = _error(_damage(tmp_path, edit))
    assert e.column == "bonus" and "unexpected" in e.problem


def test_schema_from_the_future_says_upgrade(tmp_path):
    def edit(lines):
        return [lines[0]] + ["99" + l[1:] for l in lines[1:]]
    e = _error(_damage(tmp_path, edit))
    assert e.column == "schema_version" and "newer cardbench" in e.problem


def test_unknown_status_is_rejected(tmp_path):
    def edit(lines):
        lines[2] = lines[2].replace(",ok,", ",great,", 1)
        return lines
    e = _error(_damage(tmp_path, edit))
    assert e.column == "status"


def test_value_on_a_failed_row_is_rejected(tmp_path):
    def edit(lines):
        lines[2] = lines[2].replace(",ok,", ",wrong,", 1)
        return lines
    e = _error(_damage(tmp_path, edit))
    assert e.column == "value" and "only 'ok'" in e.problem


@pytest.mark.parametrize("content, words", [
    (b"", "empty file"),
    (b"name,age\nbob,3\n", "not a cardbench results file"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "not"),
    (b"schema_version\n", "missing column"),
])
def test_foreign_files_are_rejected(tmp_path, content, words):
    path = tmp_path / "foreign.csv"
    path.write_bytes(content)
    assert words in str(_error(path))


def test_missing_file_is_a_clear_error(tmp_path):
    assert "cannot read" in str(_error(tmp_path / "nope.csv"))


def test_results_path_is_unique_and_names_device_time_host_run(tmp_path):
    from datetime import datetime, timezone

    when = datetime(2026, 11, 26, 12, 0, 0, tzinfo=timezone.utc)
    a = results.results_path(tmp_path, "NVIDIA H100 80GB HBM3", results.new_run_id(), when)
    b = results.results_path(tmp_path, "NVIDIA H100 80GB HBM3", results.new_run_id(), when)
    assert a != b
    assert a.name.startswith("NVIDIA-H100-80GB-HBM3_20261126T120000Z_")


# Property: whatever bytes a results file holds, the reader parses it or raises
# ResultsFileError naming the file; never another exception.
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_GOOD = (FIXTURES / "results_schema_v1.csv").read_bytes()


def _read_or_clean_error(tmp_path, content: bytes):
    path = tmp_path / "fuzz.csv"
    path.write_bytes(content)
    try:
        return read_results(path)
    except ResultsFileError as e:
        assert str(path) in str(e)
        return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=len(_GOOD)))
def test_any_truncation_parses_or_fails_cleanly(tmp_path, cut):
    res = _read_or_clean_error(tmp_path, _GOOD[:cut])
    header_end = _GOOD.index(b"\n") + 1
    if cut >= header_end:  # a run killed at any point after its header leaves a readable file
        assert res is not None
        assert res.complete == (cut == len(_GOOD))  # only the whole file is complete
        assert len(res.rows) == _GOOD[:cut].count(b"\n") - 1 - (cut == len(_GOOD))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pos=st.integers(min_value=0, max_value=len(_GOOD) - 1), junk=st.binary(min_size=1, max_size=8))
def test_corrupted_bytes_parse_or_fail_cleanly(tmp_path, pos, junk):
    _read_or_clean_error(tmp_path, _GOOD[:pos] + junk + _GOOD[pos + len(junk):])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_random_files_parse_or_fail_cleanly(tmp_path, content):
    _read_or_clean_error(tmp_path, content)


def test_a_run_filtered_in_pandas_and_written_back_still_reads(tmp_path):
    """A normal workflow: read a run into pandas, keep some rows, write it back, compare it."""

    w = ResultsWriter(tmp_path / "run.csv", {"host": "h", "run_id": "r1"})
    ok = {**dict.fromkeys(COLUMNS, ""), "family": "memory", "benchmark": "copy", "provider": "torch",
          "case": "plateau", "status": "ok", "value": 1.5, "samples": "1.5;1.6", "n_samples": 2,
          "calls_per_sample": 4}
    w.write(ok)
    w.write({**ok, "benchmark": "read", "status": "skipped", "value": "", "samples": "", "n_samples": "",
             "calls_per_sample": ""})
    w.close()
    df = read_results(tmp_path / "run.csv").frame()
    assert df["n_samples"].dtype.kind == "f"  # a gap makes pandas write this column as 2.0
    df.to_csv(tmp_path / "back.csv", index=False)
    assert ",2.0," in (tmp_path / "back.csv").read_text()
    back = read_results(tmp_path / "back.csv")
    assert not back.complete  # the closing row is the run's own: a filtered copy is not a complete run
    assert [r["n_samples"] for r in back.rows] == ["2", ""]
    assert back.rows[0]["calls_per_sample"] == "4" and back.frame()["value"].iloc[0] == 1.5
    (tmp_path / "bad.csv").write_text((tmp_path / "back.csv").read_text().replace(",2.0,", ",2.5,", 1))
    with pytest.raises(ResultsFileError, match="'2.5' is not a count"):
        read_results(tmp_path / "bad.csv")


def test_a_row_names_its_device_as_people_write_it():
    from bench.core.results import device_of
    assert device_of({"device_index": "3"}) == "cuda:3" and device_of({"device_index": "0"}) == "cuda:0"
    assert device_of({"device_index": ""}) == device_of({}) == "cpu"


# ---------------------------------------------------------------- the writer, field by field

def _raw(path):
    import csv
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_the_closing_row_counts_the_rows_and_says_what_it_is(tmp_path):
    path = tmp_path / "new" / "folder" / "r.csv"  # made as needed
    w = ResultsWriter(path, {"run_id": "abc123def456", "host": "h", "command": "cardbench run"})
    assert w.path == path
    for r in (ok_row(), ok_row(benchmark="read"), ok_row(benchmark="write")):
        w.write(r)
    w.close("error", "interrupted by SIGTERM")
    *measured, end = _raw(path)
    assert len(measured) == 3
    assert {k: end[k] for k in ("family", "benchmark", "provider", "metric", "unit", "value", "status", "message",
                                "run_id", "host")} == {
        "family": results.END_FAMILY, "benchmark": results.END_BENCHMARK, "provider": "cardbench", "metric": "rows",
        "unit": "count", "value": "3.0", "status": "error", "message": "interrupted by SIGTERM",
        "run_id": "abc123def456", "host": "h"}


def test_every_row_carries_its_utc_time_and_keeps_one_it_was_given(tmp_path):
    from datetime import datetime, timedelta

    given = ok_row(benchmark="read", timestamp_utc="2026-11-30T01:02:03+00:00")
    path = write_run(tmp_path / "r.csv", [ok_row(), given])
    first, given, end = _raw(path)
    for row in (first, end):
        stamp = datetime.fromisoformat(row["timestamp_utc"])
        assert stamp.utcoffset() == timedelta(0) and abs(stamp - datetime.now(stamp.tzinfo)) < timedelta(minutes=5)
    assert given["timestamp_utc"] == "2026-11-30T01:02:03+00:00"


def test_a_value_that_is_not_a_number_is_written_as_no_value(tmp_path):
    path = write_run(tmp_path / "r.csv", [ok_row(p10=float("nan"), p90=1287.125, time_s=None)])
    (row, _) = _raw(path)
    assert (row["p10"], row["p90"], row["time_s"]) == ("", "1287.125", "")


def test_a_run_id_is_twelve_hex_digits():
    ids = {results.new_run_id() for _ in range(50)}
    assert len(ids) == 50 and all(len(i) == 12 and int(i, 16) >= 0 for i in ids)


def test_a_file_name_keeps_letters_and_digits_of_the_device_and_at_most_forty():
    from datetime import datetime, timezone

    when = datetime(2026, 11, 26, 12, 0, 0, tzinfo=timezone.utc)
    name = results.results_path(Path("."), " nvidia/GeForce rtx 5090 -- a very long board name indeed, yes ", "r1",
                                when).name
    assert name.split("_")[0] == "nvidia-GeForce-rtx-5090-a-very-long-boar"  # 40 characters
    assert results.results_path(Path("."), "?!", "r1", when).name.startswith("unknown_20261126T120000Z_")


def test_a_damaged_file_error_names_file_line_and_column_exactly():
    assert str(ResultsFileError("r.csv", 7, "value", "'x' is not a number")) == \
        "r.csv, line 7, column 'value': 'x' is not a number"
    assert str(ResultsFileError("r.csv", 1, None, "not a results file")) == "r.csv, line 1: not a results file"
    assert str(ResultsFileError("r.csv", None, None, "no such file")) == "r.csv: no such file"


def test_the_frame_has_the_file_columns_in_order_and_numbers_where_numbers_are(tmp_path):
    path = write_run(tmp_path / "r.csv", [ok_row(), ok_row(benchmark="read", status="skipped", value=None, p10=None,
                                                          p90=None, samples="", n_samples=None)])
    df = read_results(path).frame()
    assert list(df.columns) == COLUMNS
    assert df["value"].iloc[0] == 1234.5678901234 and df["value"].isna().iloc[1]
    empty = results.Results("x.csv", [], False, "", results.SCHEMA_VERSION).frame()
    assert list(empty.columns) == COLUMNS and len(empty) == 0


def test_a_count_written_as_a_whole_float_reads_as_the_count_zero_included(tmp_path):
    path = write_run(tmp_path / "r.csv", [ok_row(n_samples="3.0", calls_per_sample="1.0"),
                                          ok_row(benchmark="read", status="skipped", value=None, samples="",
                                                 n_samples="0.0", calls_per_sample="")])
    ok, skipped = read_results(path).rows
    assert (ok["n_samples"], ok["calls_per_sample"], skipped["n_samples"]) == ("3", "1", "0")


# ---------------------------------------------------------------- the reader's every complaint, word for word

def _edited(tmp_path, edit):
    """The good two-row run, as lists of cells (header first), edited, written back as CSV."""
    import csv
    good = write_run(tmp_path / "good.csv", [ok_row(), ok_row(benchmark="write")])
    with open(good, newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    edit(table)
    bad = tmp_path / "bad.csv"
    with open(bad, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(table)
    return bad


def _set(column, value, line=2):
    def edit(table):
        table[line - 1][table[0].index(column)] = value
    return edit


def _rename(old, new):
    def edit(table):
        table[0][table[0].index(old)] = new
    return edit


def _add(**columns):
    """New columns at the end: name=the value on every row."""
    def edit(table):
        table[0].extend(columns)
        for row in table[1:]:
            row.extend(columns.values())
    return edit


def _drop(*columns):
    def edit(table):
        keep = [i for i, c in enumerate(table[0]) if c not in columns]
        table[:] = [[row[i] for i in keep] for row in table]
    return edit


LONG = "x" * 60
COMPLAINTS = [
    (_set("schema_version", "2.5"), "line 2, column 'schema_version': '2.5' is not an integer"),
    (_set("schema_version", "9"), "line 2, column 'schema_version': schema 9 was written by a newer cardbench "
                                  "(this one reads 1, 2); upgrade cardbench"),
    (_set("schema_version", "0"), "line 2, column 'schema_version': unknown schema version 0"),
    (_set("schema_version", "1", line=3), "line 3, column 'schema_version': 1 differs from 2 earlier in the file"),
    (_drop("p10", "p90"), "line 1, column 'p10': missing column(s) for schema 2: p10, p90"),
    (_add(zeta="", alpha=""), "line 1, column 'zeta': unexpected column(s) for schema 2: zeta, alpha"),
    (_rename("schema_version", "version"), "line 1: no 'schema_version' column; not a cardbench results file"),
    (_set("status", "done"), "line 2, column 'status': 'done' is not one of ok, wrong, unsupported, skipped, error"),
    (_set("p10", LONG), f"line 2, column 'p10': '{'x' * 40}' is not a number"),
    (_set("n_samples", "3.5"), "line 2, column 'n_samples': '3.5' is not a count"),
    (_set("calls_per_sample", "-" + LONG), f"line 2, column 'calls_per_sample': '{'-' + 'x' * 39}' is not a count"),
    (_set("value", ""), "line 2, column 'value': empty although status is 'ok'"),
    (lambda t: (_set("status", "skipped")(t), _set("value", "3")(t)),
     "line 2, column 'value': has a value although status is 'skipped' (only 'ok' rows carry one)"),
    (_set("samples", "1.0;many"), "line 2, column 'samples': not a ';'-separated list of numbers"),
]


@pytest.mark.parametrize("edit, says", COMPLAINTS, ids=[s.split(":")[0] + " " + s[-24:] for _, s in COMPLAINTS])
def test_every_complaint_names_file_line_column_and_problem_exactly(tmp_path, edit, says):
    bad = _edited(tmp_path, edit)
    assert str(_error(bad)) == f"{bad}, {says}"


def test_duplicated_columns_are_named_first_in_order(tmp_path):
    bad = _edited(tmp_path, _add(p90="1.0", host="h"))
    assert str(_error(bad)) == f"{bad}, line 1, column 'host': duplicated column"


@pytest.mark.parametrize("content, says", [
    (b"", "line 1: empty file; not a cardbench results file"),
    (b"schema_version,\x00\n", "contains NUL bytes; not a cardbench results file"),
])
def test_files_that_are_no_results_file_say_so_exactly(tmp_path, content, says):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(content)
    assert str(_error(bad)) == f"{bad}, {says}" if says.startswith("line") else str(_error(bad)) == f"{bad}: {says}"


def test_a_missing_file_says_why_in_words(tmp_path):
    with pytest.raises(ResultsFileError) as info:
        read_results(tmp_path / "nope.csv")
    assert str(info.value) == f"{tmp_path / 'nope.csv'}: cannot read: No such file or directory"


def test_a_version_written_as_a_whole_float_reads(tmp_path):
    res = read_results(_edited(tmp_path, lambda t: [row.__setitem__(t[0].index("schema_version"), "2.0")
                                                    for row in t[1:]]))
    assert res.complete and res.schema_version == 2 and len(res.rows) == 2


def test_text_with_carriage_returns_and_a_torn_last_row_of_one_character(tmp_path):
    path = write_run(tmp_path / "r.csv", [ok_row(message="line one\r\nline two\rthree")], close=False)
    with open(path, "a", encoding="utf-8", newline="") as f:
        f.write("x")
    res = read_results(path)
    assert res.rows[0]["message"] == "line one\r\nline two\rthree"
    assert not res.complete and res.end_message == "last row torn (the run died while writing it)"


def test_a_torn_row_after_lines_ending_in_a_bare_newline_keeps_the_row_before_whole(tmp_path):
    good = write_run(tmp_path / "good.csv", [ok_row(), ok_row(benchmark="write")], close=False)
    lines = good.read_text(encoding="utf-8").replace("\r\n", "\n").splitlines(keepends=True)
    torn = tmp_path / "torn.csv"
    torn.write_text("".join(lines) + lines[1][:20], encoding="utf-8")
    rows = read_results(torn).rows
    assert [r["benchmark"] for r in rows] == ["copy", "write"] and rows[1]["command"] == "cardbench run"


def test_which_card_a_row_belongs_to():
    from bench.core.results import card_key
    row = {"device_index": "2", "device_uuid": "GPU-1", "device_serial": "S1", "host": "n7", "device_name": "H200"}
    assert card_key(row, True) == "device 2" and card_key(dict(row, device_index=""), True) == "device cpu"
    assert card_key(row, False) == "GPU-1" and card_key(dict(row, device_uuid=""), False) == "S1"
    assert card_key(dict(row, device_uuid="", device_serial=""), False) == "n7:H200"


def test_a_file_name_keeps_an_x_at_either_end_of_the_device_name():
    from datetime import datetime, timezone
    when = datetime(2026, 11, 26, 12, 0, 0, tzinfo=timezone.utc)
    assert results.results_path(Path("."), "X100 GPU X", "r1", when).name.startswith("X100-GPU-X_")


def test_one_row_makes_a_frame_of_one_row(tmp_path):
    df = read_results(write_run(tmp_path / "r.csv", [ok_row()])).frame()
    assert len(df) == 1 and list(df.columns) == COLUMNS and df["value"].iloc[0] == 1234.5678901234


def test_a_burn_timeline_sits_beside_its_results_file_and_is_no_results_file(tmp_path):
    run = tmp_path / "a" / "H200_20261130T010203Z_n7_abc.csv"
    assert results.timeline_path(run) == tmp_path / "a" / "H200_20261130T010203Z_n7_abc.timeline.csv"
    assert results.timeline_path(str(run)) == results.timeline_path(run)
    assert results.is_timeline(results.timeline_path(run)) and not results.is_timeline(run)
    for p in (run, results.timeline_path(run), tmp_path / "b.csv", tmp_path / "deep" / "c.csv", tmp_path / "d.txt"):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("")
    assert results.results_files(tmp_path) == [run, tmp_path / "b.csv", tmp_path / "deep" / "c.csv"]
    assert results.results_files(str(tmp_path / "a")) == [run]


def test_a_field_too_large_for_csv_is_malformed_naming_the_line(tmp_path):
    import csv
    limit = csv.field_size_limit()
    huge = tmp_path / "header.csv"
    huge.write_text("schema_version,\"" + "x" * (limit + 10) + "\"\r\n", encoding="utf-8")
    assert str(_error(huge)) == f"{huge}, line 1: malformed CSV: field larger than field limit ({limit})"
    bad = _edited(tmp_path, _set("message", "y" * (limit + 10)))
    assert str(_error(bad)) == f"{bad}, line 2: malformed CSV: field larger than field limit ({limit})"


def test_a_blank_line_between_rows_is_skipped_not_the_end(tmp_path):
    good = write_run(tmp_path / "good.csv", [ok_row(), ok_row(benchmark="write")])
    lines = good.read_text(encoding="utf-8").splitlines(keepends=True)
    gap = tmp_path / "gap.csv"
    gap.write_text("".join(lines[:2] + ["\r\n"] + lines[2:]), encoding="utf-8")
    res = read_results(gap)
    assert res.complete and [r["benchmark"] for r in res.rows] == ["copy", "write"] and res.path == str(gap)


def test_an_older_schema_reads_with_the_newer_columns_empty():
    res = read_results(FIXTURES / "results_schema_v1.csv")
    assert res.schema_version == 1 and res.rows
    assert {r["energy_j"] for r in res.rows} == {r["value_per_watt"] for r in res.rows} == {""}


def test_only_the_run_end_row_closes_a_run(tmp_path):
    path = write_run(tmp_path / "r.csv", [ok_row(family=results.END_FAMILY, benchmark="copy"),
                                          ok_row(benchmark=results.END_BENCHMARK)])
    res = read_results(path)
    assert res.complete and [(r["family"], r["benchmark"]) for r in res.rows] == [
        (results.END_FAMILY, "copy"), ("memory", results.END_BENCHMARK)]


def test_numeric_columns_are_never_guarded_as_formulas(tmp_path):
    path = write_run(tmp_path / "r.csv", [ok_row(p10="-inf", message="-not a formula")])
    (row,) = read_results(path).rows
    assert row["p10"] == "-inf" and row["message"] == "'-not a formula"


def test_a_rows_params_are_a_dict_whatever_the_cell_holds():
    from bench.core.results import params_of
    assert params_of({"params": '{"m": 8192, "api": "torch.mm"}'}) == {"m": 8192, "api": "torch.mm"}
    for cell in ("", "{not json", "[1, 2]", "3", None):
        assert params_of({"params": cell}) == {}, cell
    assert params_of({}) == {}
