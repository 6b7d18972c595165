"""`cardbench accept` over a whole node: configuration drift between its GPUs, turning any
check off (health checks included), the gate profile's checks chosen by the policy file,
and CPU-skipped rows that must stay INCONCLUSIVE."""
import csv

import pytest

from bench.commands import accept
from bench.core.options import RunOptions
from bench.core.results import read_results
from test_accept import gpu_run, run_accept


def node_run(tmp_path, gpus: int = 4, edit=None):
    """The healthy H100 run on `gpus` GPUs of one host; `edit(index, row)` changes one GPU's rows."""
    one = gpu_run(tmp_path / "one.csv")
    with open(one, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames, list(reader)
    out = []
    for i in range(gpus):
        for r in rows:
            r = dict(r, device_index=str(i), device_uuid=f"GPU-node-{i}", device_serial=f"16500000000{i}")
            if edit:
                edit(i, r)
            out.append(r)
    path = tmp_path / "node.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(out)
    return path


def drift_by_card(path, policy=None):
    verdicts = accept.judge(read_results(path).rows, policy or accept.load_policy())
    return {v.card: next(r for r in v.results if r.check == "config-drift") for v in verdicts}


def test_same_configuration_on_every_gpu_passes(tmp_path):
    drift = drift_by_card(node_run(tmp_path))
    assert {r.verdict for r in drift.values()} == {"PASS"}
    assert drift["GPU-node-0"].measured == "same on 4 GPU(s)"


@pytest.mark.parametrize("field, odd", [("vbios_version", "96.00.74.00.0B"), ("power_limit_w", "600.0"),
                                        ("ecc_mode", "off")])
def test_the_odd_gpu_fails_showing_both_values_and_which_gpus(tmp_path, capsys, field, odd):
    def one_differs(i, r):
        if i == 2:
            r[field] = odd
    path = node_run(tmp_path, edit=one_differs)
    drift = drift_by_card(path)
    usual = read_results(path).rows[0][field]
    bad = drift["GPU-node-2"]
    assert bad.verdict == "FAIL"
    assert f"{odd} on cuda:2" in bad.reason and f"{usual} on cuda:0, cuda:1, cuda:3" in bad.reason
    assert {drift[f"GPU-node-{i}"].verdict for i in (0, 1, 3)} == {"PASS"}  # the three that agree
    code, out, _ = run_accept(capsys, tmp_path, path)
    assert code == 1 and "config-drift" in out


def test_no_majority_fails_every_gpu(tmp_path):
    path = node_run(tmp_path, gpus=2, edit=lambda i, r: r.update(vbios_version=f"96.00.99.00.0{i}"))
    drift = drift_by_card(path)
    assert {r.verdict for r in drift.values()} == {"FAIL"}
    assert "96.00.99.00.00 on cuda:0; 96.00.99.00.01 on cuda:1" in drift["GPU-node-0"].reason


def test_expected_values_from_the_policy_are_checked(tmp_path, capsys):
    policy = tmp_path / "policy.toml"
    policy.write_text('[drift.expected]\nvbios_version = "96.00.89.00.01"\npower_limit_w = 700\n')
    path = node_run(tmp_path)
    drift = drift_by_card(path, accept.load_policy(str(policy)))
    r = drift["GPU-node-0"]
    assert r.verdict == "FAIL" and "vbios_version 96.00.99.00.01 on cuda:0, the policy expects 96.00.89.00.01" \
        in r.reason
    assert "power_limit_w" not in r.reason  # "700.0" is 700
    policy.write_text('[drift.expected]\nvbios_version = "96.00.99.00.01"\n')
    assert run_accept(capsys, tmp_path, path, "--policy", policy)[0] == 0


def test_drift_without_readings_is_inconclusive(tmp_path):
    path = node_run(tmp_path, gpus=2, edit=lambda i, r: r.update(vbios_version=""))
    r = drift_by_card(path)["GPU-node-0"]
    assert r.verdict == "INCONCLUSIVE" and "vbios_version" in r.reason



# ---------------------------------------------------------------- turning a health check off


@pytest.mark.parametrize("check, field, value", [("temperature", "temp_c_max", "91"),
                                                 ("other-processes", "compute_processes", "1"),
                                                 ("config-drift", "vbios_version", "")])
def test_any_health_check_can_be_turned_off(tmp_path, capsys, check, field, value):
    res = gpu_run(tmp_path / "r.csv", lambda r: r.update({field: value}))
    assert run_accept(capsys, tmp_path, res)[0] in (1, 2)  # the fault counts while the check is on
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[[check]]\nname = "{check}"\nenabled = false\n')
    code, out, err = run_accept(capsys, tmp_path, res, "--policy", policy)
    assert code == 0, out + err
    assert f" {check} " not in out
    policy.write_text(f'[[check]]\nname = "{check}"\nenabled = true\n')  # and back on
    assert run_accept(capsys, tmp_path, res, "--policy", policy)[0] in (1, 2)


# ---------------------------------------------------------------- CPU mode


def test_gpu_checks_skipped_on_the_cpu_are_inconclusive_not_na(tmp_path, monkeypatch):
    """A CPU run skips every transfer: that proves nothing about a GPU, so it is never N/A."""
    from bench.commands import run

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    _, path = run.execute(RunOptions(device="cpu", families=("transfer",), out=str(tmp_path), argv=("run",)))
    rows = read_results(path).rows
    assert {r["status"] for r in rows} == {"skipped"} and {r["device_index"] for r in rows} == {""}
    (card,) = accept.judge(rows, accept.load_policy())
    by = {r.check: r for r in card.results}
    for check in ("h2d-pinned", "d2h-pinned", "p2p"):
        assert by[check].verdict == "INCONCLUSIVE", by[check]
        assert "skipped: CPU mode" in by[check].reason
    assert accept.NOT_APPLICABLE not in {r.verdict for r in card.results}
    assert {by[h].verdict for h in accept.HEALTH_CHECKS} == {"INCONCLUSIVE"}  # no NVML on the CPU


# ---------------------------------------------------------------- the gate's checks


def test_the_gate_profile_is_judged_by_the_checks_its_policy_table_lists(tmp_path, capsys):
    res = gpu_run(tmp_path / "r.csv")
    policy = accept.load_policy()
    (card,) = accept.judge(read_results(res).rows, policy, profile="gate")
    assert [r.check for r in card.results] == policy.profiles["gate"]["checks"]
    assert {"h2d-pinned", "p2p", "allreduce-busbw", "matmul-fp8"}.isdisjoint(r.check for r in card.results)
    mine = tmp_path / "policy.toml"
    mine.write_text('[profile.gate]\nchecks = ["memory-copy", "temperature"]\n')
    (card,) = accept.judge(read_results(res).rows, accept.load_policy(str(mine)), profile="gate")
    assert [r.check for r in card.results] == ["memory-copy", "temperature"]


def test_drift_reads_word_for_word(tmp_path):
    def odd(i, r):
        if i == 2:
            r.update(vbios_version="96.00.74.00.0B", power_limit_w="600.0")
    drift = drift_by_card(node_run(tmp_path, 3, odd))
    bar = "same on every GPU of the node"
    assert [(r.verdict, r.measured, r.bar, r.reason) for r in drift.values()] == [
        ("PASS", "same on 3 GPU(s)", bar, "vbios_version, driver_version, ecc_mode, power_limit_w")] * 2 + [
        ("FAIL", "2 mismatch(es)", bar, "vbios_version differs: 96.00.99.00.01 on cuda:0, cuda:1; 96.00.74.00.0B on "
                                        "cuda:2; power_limit_w differs: 700.0 on cuda:0, cuda:1; 600.0 on cuda:2")]
    policy = tmp_path / "p.toml"
    policy.write_text('[drift.expected]\ndriver_version = "999.1"\n')
    (tmp_path / "x").mkdir()
    drift = drift_by_card(node_run(tmp_path / "x", 2), accept.load_policy(str(policy)))
    assert [(r.verdict, r.measured, r.bar, r.reason) for r in drift.values()] == [
        ("FAIL", "1 mismatch(es)", "same on every GPU of the node, as [drift.expected] says",
         f"driver_version 580.159.04 on cuda:{i}, the policy expects 999.1") for i in (0, 1)]


def test_gpus_on_different_hosts_are_not_compared(tmp_path):
    def elsewhere(i, r):
        if i == 1:
            r.update(host="node-b", vbios_version="96.00.74.00.0B")
    drift = drift_by_card(node_run(tmp_path, 2, elsewhere))
    assert {k: r.verdict for k, r in drift.items()} == {"GPU-node-0": "PASS", "GPU-node-1": "PASS"}


def test_burn_rows_add_their_checks_to_the_others(tmp_path):
    from test_burn_accept import _card
    rows = read_results(gpu_run(tmp_path / "r.csv")).rows
    burn = [dict(rows[0], **{k: v for k, v in b.items() if k in ("family", "benchmark", "dtype", "status", "value",
                                                                    "unit", "params", "case")}) for b in _card()]
    (card,) = accept.judge(rows + burn, accept.load_policy())
    checks = [r.check for r in card.results]
    assert checks[:2] == ["memory-copy", "matmul-bf16"] and "config-drift" in checks and "burn-sdc" in checks
