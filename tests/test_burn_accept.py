"""The burn-in verdicts of `cardbench accept`: each check's PASS, FAIL and INCONCLUSIVE from burn rows,
the GPU that falls behind named, a JUnit case per check per GPU, and `accept --burn-in` end to end."""
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bench.commands import accept
from bench.commands.accept_burn import BURN_CHECKS, burn_checks
from bench.core import faults
from bench.core.results import COLUMNS

ROOT = Path(__file__).resolve().parents[1]
POLICY = accept.load_policy()


def _row(index, benchmark, dtype="bf16", status="ok", value=700.0, message="", reasons="0x4", **params):
    base = {"bf16": {"iterations": 1000, "mismatch_iterations": 0, "cross_check": "identical to 1 other device(s)",
                     "window_s": 60, "throughput_first_window": 710.0, "throughput_last_window": 700.0,
                     "drop_pct": 1.4, "temp_gpu_max_c": 71, "temp_slowdown_c": 87, "temp_mem_max_c": 80,
                     "temp_mem_limit_c": 95}}
    if benchmark == "memtest":
        p = {"errors": 0, "bytes_tested": 130 * 2**30, "free_bytes": 133 * 2**30, "coverage": 0.977,
             "ecc_new_uncorrectable": 0, "ecc_new_correctable": 0, "ecc_after": {"remapped_rows_pending": "no"},
             "temp_gpu_max_c": 66, "temp_slowdown_c": 87}
    else:
        p = dict(base["bf16"])
    p.update(params)
    row = dict.fromkeys(COLUMNS, "")
    row.update(family="burn", benchmark=benchmark, dtype=dtype if benchmark == "soak" else "uint32", status=status,
               message=message, value="" if status != "ok" else str(value), unit="TFLOP/s" if benchmark == "soak"
               else "GB/s", device_index=str(index), device_name="NVIDIA H200", device_uuid=f"GPU-{index}",
               run_id="r1", host="node7", params=json.dumps(p), clocks_event_reasons=reasons, provider="torch")
    return row


def _card(index=0, soak=None, memtest=None):
    return [_row(index, "soak", **(soak or {})), _row(index, "memtest", **(memtest or {}))]


def _verdicts(rows, index=0):
    return {r.check: r for r in burn_checks(POLICY, [r for r in rows if r["device_index"] == str(index)], rows)}


def test_a_clean_burn_passes_every_check_but_the_spread_of_a_lone_gpu():
    v = _verdicts(_card())
    assert set(v) == set(BURN_CHECKS)
    assert {k: r.verdict for k, r in v.items() if r.verdict != "PASS"} == {"burn-node-spread": "N/A"}
    assert v["burn-sdc"].measured == "0 of 1000 iterations differ"
    assert "130.00 GiB (97.7% of free)" in v["burn-memtest"].measured


@pytest.mark.parametrize("card, check, verdict, says", [
    ({"soak": {"status": "wrong", "message": "silent data corruption on cuda:0: 1 bf16 iteration(s) of 90 differ"}},
     "burn-sdc", "FAIL", "silent data corruption on cuda:0"),
    ({"soak": {"status": "error", "message": "not measured: the worker died"}}, "burn-sdc", "INCONCLUSIVE", "died"),
    ({"memtest": {"status": "wrong", "errors": 3, "message": "memory errors on cuda:0: 3 wrong word(s)"}},
     "burn-memtest", "FAIL", "3 wrong word(s)"),
    ({"memtest": {"status": "error", "message": "tested 40.0% of the free memory: allocation failed"}},
     "burn-memtest", "INCONCLUSIVE", "allocation failed"),
    ({"memtest": {"coverage": 0.5}}, "burn-memtest", "INCONCLUSIVE", "too little"),
    ({"memtest": {"status": "wrong", "ecc_new_uncorrectable": 2}}, "burn-ecc", "FAIL", "2 new uncorrectable"),
    ({"memtest": {"ecc_after": {"remapped_rows_pending": "yes"}}}, "burn-ecc", "FAIL", "remap pending"),
    ({"memtest": {"ecc_new_uncorrectable": None}}, "burn-ecc", "PASS", ""),
    ({"soak": {"drop_pct": 15.0, "throughput_last_window": 603.5}}, "burn-stability", "FAIL", "heated"),
    ({"soak": {"window_s": 0}}, "burn-stability", "INCONCLUSIVE", "long enough"),
    ({"soak": {"reasons": "0x44"}}, "burn-throttling", "FAIL", "hw_thermal_slowdown during soak bf16"),
    ({"soak": {"reasons": ""}, "memtest": {"reasons": ""}}, "burn-throttling", "INCONCLUSIVE", "no NVML"),
    ({"soak": {"temp_gpu_max_c": 88}}, "burn-temperature", "FAIL", "GPU 88 C during soak bf16"),
    ({"soak": {"temp_mem_max_c": 96}}, "burn-temperature", "FAIL", "memory 96 C"),
])
def test_each_check_fails_or_stays_open_on_its_own_finding(card, check, verdict, says):
    soak = dict(card.get("soak", {}))
    memtest = dict(card.get("memtest", {}))
    if memtest.get("ecc_new_uncorrectable", 0) is None:  # a real zero: PASS
        memtest["ecc_new_uncorrectable"] = 0
    v = _verdicts(_card(soak=soak, memtest=memtest))[check]
    assert v.verdict == verdict, (v.verdict, v.reason)
    assert says in v.reason


def test_no_limit_or_no_reading_never_passes_temperature():
    rows = _card(soak={"temp_slowdown_c": None, "temp_mem_limit_c": None}, memtest={"temp_slowdown_c": None})
    for r in rows:
        p = json.loads(r["params"])
        r["params"] = json.dumps({k: v for k, v in p.items() if v is not None})
    assert _verdicts(rows)["burn-temperature"].verdict == "INCONCLUSIVE"


def test_the_gpu_that_falls_behind_the_nodes_best_is_named():
    rows = _card(0, soak={"value": 730.0}) + _card(1, soak={"value": 700.0}) + _card(2, soak={"value": 612.0})
    assert _verdicts(rows, 0)["burn-node-spread"].verdict == "PASS"
    assert _verdicts(rows, 1)["burn-node-spread"].verdict == "PASS"
    slow = _verdicts(rows, 2)["burn-node-spread"]
    assert slow.verdict == "FAIL" and "cuda:2 falls behind: 83.8% of the node's best (cuda:0, 730.0 TFLOP/s)" in slow.reason


def test_without_burn_rows_the_burn_checks_are_inconclusive_when_asked_for():
    rows = [dict(_row(0, "soak"), family="memory", benchmark="copy")]
    verdicts = accept.judge(rows, POLICY, burn_required=True)
    burn = [r for r in verdicts[0].results if r.check.startswith("burn-")]
    assert [r.check for r in burn] == list(BURN_CHECKS) and {r.verdict for r in burn} == {"INCONCLUSIVE"}
    assert not [r for r in accept.judge(rows, POLICY)[0].results if r.check.startswith("burn-")]


def test_junit_has_a_case_per_check_per_gpu(tmp_path):
    rows = _card(0) + _card(1, soak={"status": "wrong", "message": "silent data corruption on cuda:1"})
    verdicts = accept.judge(rows, POLICY)
    accept.write_junit(verdicts, tmp_path / "j.xml")
    root = ET.parse(tmp_path / "j.xml").getroot()
    cases = [(c.get("classname"), c.get("name")) for c in root.iter("testcase")]
    for gpu in ("GPU-0", "GPU-1"):
        assert [n for k, n in cases if k == f"cardbench.accept.{gpu}" and n.startswith("burn-")] == list(BURN_CHECKS)
    failed = [c for c in root.iter("testcase") if c.find("failure") is not None and c.get("name") == "burn-sdc"]
    assert [c.get("classname") for c in failed] == ["cardbench.accept.GPU-1"]


def test_a_user_policy_can_loosen_a_burn_bar_and_bad_values_are_named(tmp_path):
    mine = tmp_path / "p.toml"
    mine.write_text("[burn]\nmax_throughput_drop_pct = 20\n")
    policy = accept.load_policy(str(mine))
    assert policy.burn["max_throughput_drop_pct"] == 20 and policy.burn["max_mismatches"] == 0
    mine.write_text("[burn]\nmax_mismatches = -1\n")
    with pytest.raises(accept.PolicyError, match="max_mismatches"):
        accept.load_policy(str(mine))
    mine.write_text("[burn]\nmax_missmatches = 1\n")
    with pytest.raises(accept.PolicyError, match="unknown key"):
        accept.load_policy(str(mine))


def _accept(tmp_path, *extra, env=None):
    environ = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    environ.pop(faults.ENV, None)
    environ.update(env or {})
    fixture = ROOT / "tests" / "fixtures" / "results_schema_v1.csv"
    return subprocess.run([sys.executable, "-m", "bench", "accept", "--device", "cpu", "--from", str(fixture),
                           "--out", str(tmp_path), "--junit", str(tmp_path / "j.xml"), *extra],
                          capture_output=True, text=True, cwd=ROOT, env=environ, timeout=300)


def test_accept_burn_in_runs_the_burn_and_judges_it(tmp_path):
    proc = _accept(tmp_path, "--burn-in", "3s")
    assert proc.returncode == 2, proc.stderr  # CPU mode: the memory test covers too little to pass
    cases = {(c.get("classname"), c.get("name")): c for c in ET.parse(tmp_path / "j.xml").getroot().iter("testcase")}
    mine = {name: c for (cls, name), c in cases.items() if name.startswith("burn-")}
    assert set(mine) == set(BURN_CHECKS)
    assert mine["burn-sdc"].find("failure") is None and mine["burn-sdc"].find("error") is None  # PASS
    assert mine["burn-memtest"].find("error") is not None  # INCONCLUSIVE: a small host test
    assert "burn-sdc" in proc.stdout and "results:" in proc.stdout


def test_accept_burn_in_fails_on_a_flipped_bit(tmp_path):
    proc = _accept(tmp_path, "--burn-in", "3s", env={faults.ENV: "bitflip"})
    assert proc.returncode == 1, proc.stderr
    sdc = [c for c in ET.parse(tmp_path / "j.xml").getroot().iter("testcase") if c.get("name") == "burn-sdc"]
    assert sdc and "silent data corruption on cpu" in sdc[0].find("failure").get("message")
