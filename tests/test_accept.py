"""`cardbench accept`: verdicts from a real CPU run, and from the same file given an H100's
telemetry (values of tests/fixtures/nvml_h100.json) with controlled faults."""
import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bench.commands import accept
from bench.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
REAL_RUN = FIXTURES / "results_schema_v1.csv"
H100 = json.loads((FIXTURES / "nvml_h100.json").read_text())


def h100_identity() -> dict[str, str]:
    """Card columns as an H100 80GB HBM3 with a healthy state reports them."""
    return {
        "device_index": "0", "device_name": "NVIDIA H100 80GB HBM3", "device_uuid": "GPU-0a1b2c3d-test",
        "device_serial": "1650123456789", "driver_version": "580.159.04", "pcie_gen_max": "5",
        "pcie_width_max": "16", "pcie_gen_current": "5", "pcie_width_current": "16", "ecc_mode": "on",
        "ecc_errors_uncorrected": "0", "ecc_errors_uncorrected_aggregate": "0", "remapped_rows_pending": "no",
        "remapped_rows_failure": "no", "compute_processes": "0", "clocks_event_reasons": "0x4",
        "clocks_event_reason_names": "sw_power_cap", "temp_c_max": "61",
        "vbios_version": H100["devices"][0]["vbios_version"],
        "power_limit_w": repr(H100["devices"][0]["enforced_power_limit_mw"] / 1000),
    }


def gpu_run(path: Path, edit=None, extra_rows=()) -> Path:
    """The real CPU run's rows dressed as an H100 run: the copy row at 90% of spec,
    plus matmul and transfer rows as the families write them."""
    with open(REAL_RUN, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header, data = reader.fieldnames, list(reader)
    measured = [r for r in data if r["family"] != "run"]
    for r in measured:
        r.update(h100_identity())
        if r["status"] == "ok":
            r.update(spec_entry="H100 SXM5 80GB", spec_value="3350.0", pct_of_spec=repr(100 * float(r["value"]) / 3350))
    copy = next(r for r in measured if r["benchmark"] == "copy" and r["status"] == "ok")
    copy.update(value="3015.0", pct_of_spec="90.0", pct_of_derived="89.9")
    template = dict(copy)
    rows = list(measured)
    for kw in (
        dict(family="matmul", benchmark="mm", provider="torch", dtype="bf16", case="8192x8192x8192",
             value="780.0", unit="TFLOP/s", pct_of_spec="78.8"),
        dict(family="matmul", benchmark="scaled_mm", provider="torch", dtype="fp8", case="8192x8192x8192",
             value="1380.0", unit="TFLOP/s", pct_of_spec="69.7"),
        dict(family="transfer", benchmark="h2d", provider="torch", dtype="", case="pinned-1GiB",
             value="55.0", pct_of_spec="87.3", pct_of_derived="87.3"),
        dict(family="transfer", benchmark="d2h", provider="torch", dtype="", case="pinned-1GiB",
             value="56.0", pct_of_spec="88.9", pct_of_derived="88.9"),
        dict(family="transfer", benchmark="p2p", provider="torch", dtype="", case="cuda:0->cuda:1",
             status="skipped", value="", pct_of_spec="", pct_of_derived="", samples="", p10="", p90="",
             message="one GPU: no peer to copy to"),
        dict(family="collective", benchmark="all_reduce", provider="nccl", dtype="bf16", case="peak",
             status="skipped", value="", pct_of_spec="", pct_of_derived="", samples="", p10="", p90="",
             message="collectives need two or more ranks: one GPU in this run (cuda:0)"),
        *extra_rows,
    ):
        rows.append({**template, **kw})
    if edit:
        for r in rows:
            edit(r)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
    return path


def run_accept(capsys, tmp_path, results, *extra):
    code = main(["accept", "--from", str(results), "--out", str(tmp_path / "out"), *map(str, extra)])
    out = capsys.readouterr()
    return code, out.out, out.err


def results_by_check(path: Path) -> dict[str, accept.Result]:
    from bench.core.results import read_results

    (card,) = accept.judge(read_results(path).rows, accept.load_policy())
    return {r.check: r for r in card.results}


def test_healthy_h100_passes_and_keeps_a_birth_certificate(tmp_path, capsys):
    res = gpu_run(tmp_path / "h100.csv")
    code, out, _ = run_accept(capsys, tmp_path, res, "--junit", tmp_path / "j.xml")
    by = results_by_check(res)
    assert {r.verdict for r in by.values()} == {"PASS", "N/A"}, out
    assert by["p2p"].verdict == "N/A" and "one GPU" in by["p2p"].reason
    assert by["memory-copy"].measured.startswith("3,015.0 GB/s = 90.0%")
    assert code == 0 and ": PASS" in out
    cert = tmp_path / "out" / "baselines" / "GPU-0a1b2c3d-test.csv"
    assert cert.read_bytes() == res.read_bytes() and "birth certificate" in out
    code, out, _ = run_accept(capsys, tmp_path, gpu_run(tmp_path / "later.csv"))
    assert code == 0 and cert.read_bytes() == res.read_bytes()  # the first accepted run stays the baseline


def test_link_trained_at_gen4_x8_fails_naming_the_link(tmp_path, capsys):
    def gen4x8(r):
        if r["family"] == "transfer":
            r.update(pcie_gen_current="4", pcie_width_current="8")
    res = gpu_run(tmp_path / "r.csv", gen4x8)
    link = results_by_check(res)["pcie-link"]
    assert link.verdict == "FAIL" and "Gen4 x8" in link.reason and "Gen5 x16" in link.reason
    assert run_accept(capsys, tmp_path, res)[0] == 1


def test_idle_link_reading_alone_is_inconclusive_not_a_fail(tmp_path):
    def idle(r):
        r.update(pcie_gen_current="1")
    res = gpu_run(tmp_path / "r.csv", idle)
    rows = [r for r in csv.DictReader(open(res)) if r["family"] != "transfer"]
    (card,) = accept.judge(rows, accept.load_policy())
    link = next(r for r in card.results if r.check == "pcie-link")
    assert link.verdict == "INCONCLUSIVE" and "under load" in link.reason


@pytest.mark.parametrize("mask, names", [
    ("0x8", {"hw_slowdown"}),
    ("0x4c", {"hw_slowdown", "hw_thermal_slowdown"}),  # combined bits: gpu-fryer misses these
    ("0xa4", {"sw_thermal_slowdown", "hw_power_brake_slowdown"}),
])
def test_throttle_bits_in_any_row_fail_and_combined_bits_are_decoded(tmp_path, capsys, mask, names):
    def throttle(r):
        if r["benchmark"] == "triad":
            r["clocks_event_reasons"] = mask
    res = gpu_run(tmp_path / "r.csv", throttle)
    t = results_by_check(res)["throttling"]
    assert t.verdict == "FAIL" and set(t.measured.split(", ")) == names and "memory/triad" in t.reason
    assert run_accept(capsys, tmp_path, res)[0] == 1


def test_power_cap_alone_is_not_a_fault(tmp_path):
    assert results_by_check(gpu_run(tmp_path / "r.csv"))["throttling"].verdict == "PASS"  # 0x4 on every row


def test_missing_spec_is_inconclusive_never_pass(tmp_path, capsys):
    def no_spec(r):
        r.update(spec_entry="", spec_value="", pct_of_spec="")
    res = gpu_run(tmp_path / "r.csv", no_spec)
    by = results_by_check(res)
    assert by["memory-copy"].verdict == "INCONCLUSIVE" and "--specs" in by["memory-copy"].reason
    assert by["h2d-pinned"].verdict == "PASS"  # judged against the trained link, which needs no spec
    assert run_accept(capsys, tmp_path, res)[0] == 2


def test_error_row_is_not_pass_and_wrong_row_fails(tmp_path, capsys):
    res = gpu_run(tmp_path / "r.csv", lambda r: r.update(status="error", value="", pct_of_spec="", samples="",
                                                         p10="", p90="", message="RuntimeError: boom")
                  if r["family"] == "matmul" else None)
    assert results_by_check(res)["matmul-bf16"].verdict == "INCONCLUSIVE"
    assert run_accept(capsys, tmp_path, res)[0] == 2
    res = gpu_run(tmp_path / "w.csv", lambda r: r.update(status="wrong", value="", pct_of_spec="", samples="",
                                                         p10="", p90="", message="copy: 3 differ")
                  if r["benchmark"] == "copy" else None)
    mc = results_by_check(res)["memory-copy"]
    assert mc.verdict == "FAIL" and "copy: 3 differ" in mc.reason


def test_below_the_bar_fails_with_value_and_bar(tmp_path, capsys):
    res = gpu_run(tmp_path / "r.csv", lambda r: r.update(value="2380.0", pct_of_spec="71.0")
                  if r["benchmark"] == "copy" and r["status"] == "ok" else None)
    mc = results_by_check(res)["memory-copy"]
    assert mc.verdict == "FAIL" and "71.0%" in mc.measured and mc.bar == ">= 80% of spec"


@pytest.mark.parametrize("field, value, words", [
    ("ecc_errors_uncorrected", "2", "uncorrectable"),
    ("remapped_rows_pending", "yes", "row remapping"),
    ("compute_processes", "1", "other processes"),
    ("temp_c_max", "91", "too hot"),
    ("ecc_mode", "off", "ECC is off"),
])
def test_health_faults_fail(tmp_path, field, value, words):
    by = results_by_check(gpu_run(tmp_path / "r.csv", lambda r: r.update({field: value})))
    assert any(r.verdict == "FAIL" and words in r.reason for r in by.values())


def test_cpu_run_is_inconclusive_with_reasons(tmp_path, capsys):
    code, out, _ = run_accept(capsys, tmp_path, REAL_RUN)
    assert code == 2 and "PASS" not in out.replace("INCONCLUSIVE", "")
    assert "no NVML" in out and "--specs" in out


def test_junit_is_well_formed_one_case_per_check(tmp_path, capsys):
    res = gpu_run(tmp_path / "r.csv", lambda r: r.update(clocks_event_reasons="0x8") if r["benchmark"] == "read" else None)
    run_accept(capsys, tmp_path, res, "--junit", tmp_path / "j.xml")
    root = ET.parse(tmp_path / "j.xml").getroot()
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == int(suite.get("tests")) == len(results_by_check(res))
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failed == ["throttling"] and suite.get("failures") == "1"
    assert [c.get("name") for c in cases if c.find("skipped") is not None] == ["p2p", "allreduce-busbw"]


@pytest.mark.parametrize("text, words", [
    ("[[check]]\nname = \"memory-copy\"\nmin_pct = -3\n", "check 'memory-copy', field 'min_pct'"),
    ("[[check]]\nname = \"memory-copy\"\nbogus = 1\n", "check 'memory-copy', field 'bogus': unknown key"),
    ("[[check]]\nname = \"x\"\ntitle = \"t\"\nagainst = \"spec\"\nmin_pct = 50\n", "check 'x', field 'select': missing"),
    ("[[check]]\nname = \"memory-copy\"\nagainst = \"vibes\"\n", "field 'against'"),
    ("[[check]]\nname = \"p2p\"\n[[check]]\nname = \"p2p\"\n", "defined twice"),
    ("[health]\nmax_temperature_c = \"hot\"\n", "[health], field 'max_temperature_c'"),
    ("[health]\nforbidden_clock_reasons = [\"gremlins\"]\n", "unknown reason 'gremlins'"),
    ("[idle_gate]\ntimeout_s = -1\n", "negative"),
    ("[[check]\nname=", "not valid TOML"),
    ("surprise = 1\n", "unknown top-level key 'surprise'"),
    # the node sections ([drift], [profile.X]) and turning a health check off
    ('[drift]\nfields = ["vbios_version", "colour"]\n', "[drift], field 'fields'"),
    ('[drift.expected]\nfirmware = "1"\n', "[drift.expected], field 'firmware'"),
    ('[profile.gate]\nchecks = ["memory-copy", "nope"]\n', "unknown check 'nope'"),
    ('[profile.turbo]\ncases = []\n', "[profile.turbo]"),
    ('[profile.gate]\ntimeout_s = 0\n', "[profile.gate], field 'timeout_s'"),
    ('[[check]]\nname = "temperature"\nmin_pct = 3\n', "'temperature' is a health check"),
    ('[[check]]\nname = "tempreature"\nenabled = false\n', "check 'tempreature', field 'name': no such check"),
])
def test_policy_errors_name_file_check_and_field(tmp_path, capsys, text, words):
    policy = tmp_path / "policy.toml"
    policy.write_text(text)
    code, _, err = run_accept(capsys, tmp_path, REAL_RUN, "--policy", policy)
    assert code == 2 and str(policy) in err and words in err


def test_user_policy_overrides_a_bar_and_disables_a_check(tmp_path, capsys):
    policy = tmp_path / "policy.toml"
    policy.write_text('[[check]]\nname = "memory-copy"\nmin_pct = 95\n\n[[check]]\nname = "p2p"\nenabled = false\n')
    res = gpu_run(tmp_path / "r.csv")
    code, out, _ = run_accept(capsys, tmp_path, res, "--policy", policy)
    assert code == 1 and ">= 95% of spec" in out and " p2p " not in out


def test_unreadable_results_are_bad_input(tmp_path, capsys):
    code, _, err = run_accept(capsys, tmp_path, tmp_path / "nope.csv")
    assert code == 2 and "nope.csv" in err


# ---------------------------------------------------------------- derived claims

SERVER = "RTX PRO 6000 Blackwell Server Edition"  # its dense tensor figures are derived from clocks


def server_run(path: Path) -> Path:
    """The H100 run dressed as an RTX PRO 6000 Server Edition: bf16 at 400 of the derived 480 TFLOP/s."""
    def as_server(r):
        r.update(device_name=f"NVIDIA {SERVER}", pci_device_id="0x2BB510DE", spec_entry=SERVER if r["spec_entry"] else "")
        if r["family"] == "matmul" and r["dtype"] == "bf16":
            r.update(value="400.0", spec_figure="bf16_dense", spec_value="480.0", spec_unit="TFLOP/s",
                     pct_of_spec=repr(100 * 400 / 480))
    return gpu_run(path, as_server)


def confirming_specs(path: Path, value: float = 480, extra: str = "") -> Path:
    path.write_text(f'[sources]\nQ = "Vendor quote 2026-05, bf16 dense (made up for the tests)"\n\n[[gpu]]\nname = "{SERVER}"\n'
                    f'bf16_dense = {{ value = {value}, unit = "TFLOP/s", source = "Q"{extra} }}\n')
    return path


def test_a_derived_claim_is_inconclusive_never_pass_or_fail(tmp_path):
    from bench.core import specs
    from bench.core.results import read_results

    rows = read_results(server_run(tmp_path / "r.csv")).rows
    (card,) = accept.judge(rows, accept.load_policy())
    bf16 = next(r for r in card.results if r.check == "matmul-bf16")
    assert bf16.verdict == "INCONCLUSIVE" and accept.DERIVED_CLAIM in bf16.reason
    assert "bf16_dense 480 TFLOP/s" in bf16.reason and "= 83.3%" in bf16.measured
    assert card.verdict == "INCONCLUSIVE"
    # the same figure confirmed by the user's spec file is judged normally
    db = specs.load(confirming_specs(tmp_path / "mine.toml"))
    (card,) = accept.judge(rows, accept.load_policy(), db)
    assert next(r for r in card.results if r.check == "matmul-bf16").verdict == "PASS"
    # the user's file is the confirmation, whatever confidence it writes for its own figure
    db_own = specs.load(confirming_specs(tmp_path / "own.toml", extra=', confidence = "derived"'))
    (card,) = accept.judge(rows, accept.load_policy(), db_own)
    assert next(r for r in card.results if r.check == "matmul-bf16").verdict == "PASS"
    # and a failing card stays failing once the claim is confirmed
    slow = [dict(r, value="240.0", pct_of_spec="50.0") if r["dtype"] == "bf16" and r["family"] == "matmul" else r
            for r in rows]
    (card,) = accept.judge(slow, accept.load_policy(), db)
    assert next(r for r in card.results if r.check == "matmul-bf16").verdict == "FAIL"


def test_accept_from_a_file_with_specs_renormalizes_and_judges_the_confirmed_claim(tmp_path, capsys):
    res = server_run(tmp_path / "r.csv")
    code, out, _ = run_accept(capsys, tmp_path, res)
    assert code == 2 and accept.DERIVED_CLAIM in out
    code, out, _ = run_accept(capsys, tmp_path, res, "--specs", confirming_specs(tmp_path / "mine.toml", 500))
    bf16 = next(l for l in out.splitlines() if " matmul-bf16 " in l)
    assert bf16.lstrip().startswith("PASS") and "= 80.0%" in bf16   # 400 against the file's 500, not 480
    fp8 = next(l for l in out.splitlines() if " matmul-fp8 " in l)
    assert fp8.lstrip().startswith("INCONCLUSIVE") and accept.DERIVED_CLAIM in out   # fp8 is still derived
    bad = tmp_path / "bad.toml"
    bad.write_text("[[gpu]]\nname = 3\n")
    code, _, err = run_accept(capsys, tmp_path, res, "--specs", bad)
    assert code == 2 and "bad.toml" in err
