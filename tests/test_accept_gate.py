"""`cardbench accept --profile gate` and `--prometheus` on accept and run: the gate measures only
its policy's cases, every device in its own worker process at once; a worker that dies leaves
error rows (never a PASS); the Prometheus file is written at the end, also after Ctrl-C."""

import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from bench.cli import main
from bench.commands import accept, accept_gate
from bench.core import harness
from bench.core.devices import Target
from bench.core.options import RunOptions
from bench.core.results import ResultsWriter, read_results
from helpers import make_run

GATE_CPU_CASES = {"memory/copy/torch/plateau", "matmul/bf16/torch/1024x1024x1024"}


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the workers inherit it
    for name in ("WORLD_SIZE", "RANK", "SLURM_STEP_NUM_TASKS", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)


def metrics(path):
    return {s.name: s for f in text_string_to_metric_families(path.read_text()) for s in f.samples
            if s.name != "cardbench_accept_check_verdict"}


def verdict_samples(path):
    return {s.labels["check"]: s.value for f in text_string_to_metric_families(path.read_text())
            for s in f.samples if s.name == "cardbench_accept_check_verdict"}


def test_gate_on_the_cpu_measures_its_cases_and_judges_them_with_its_checks(tmp_path, capsys, cpu_only):
    prom = tmp_path / "cardbench.prom"
    code = main(["accept", "--profile", "gate", "--device", "cpu", "--out", str(tmp_path / "out"),
                 "--prometheus", str(prom)])
    out = capsys.readouterr().out
    assert code == 2, out  # no spec entry and no NVML on the CPU: INCONCLUSIVE, never PASS
    (path,) = (tmp_path / "out").glob("*.csv")
    res = read_results(path)
    assert res.complete
    assert {f"{r['family']}/{r['benchmark']}/{r['provider']}/{r['case']}" for r in res.rows} == GATE_CPU_CASES
    assert {r["status"] for r in res.rows} == {"ok"}
    policy = accept.load_policy()
    (card,) = accept.judge(res.rows, policy, profile="gate")
    assert [r.check for r in card.results] == policy.profiles["gate"]["checks"]
    assert "profile gate" in out and not (tmp_path / "out" / "baselines").exists()
    assert set(verdict_samples(prom)) == set(policy.profiles["gate"]["checks"])
    m = metrics(prom)
    assert m["cardbench_accept_verdict"].value == -1 and m["cardbench_memory_bandwidth_bytes_per_second"].value > 0


def test_a_worker_that_dies_leaves_error_rows_naming_it(tmp_path, capsys, cpu_only, monkeypatch):
    monkeypatch.setattr(accept_gate, "WORKER", "tests.fake_gate_workers:exit_after_first_worker")
    code = main(["accept", "--profile", "gate", "--device", "cpu", "--out", str(tmp_path)])
    assert code == 2
    rows = read_results(next(tmp_path.glob("*.csv"))).rows
    assert sorted(r["status"] for r in rows) == ["error", "ok"]
    failed = next(r for r in rows if r["status"] == "error")
    assert "not measured: the cpu worker" in failed["message"] and "exited with code 3" in failed["message"]


def test_every_device_is_measured_at_the_same_time(tmp_path, monkeypatch):
    """Two devices whose workers each wait for the other: one after another would time out."""
    monkeypatch.setattr(accept_gate, "WORKER", "tests.fake_gate_workers:rendezvous_worker")
    monkeypatch.setenv("GATE_TEST_DIR", str(tmp_path / "started"))
    monkeypatch.setenv("GATE_TEST_DEVICES", "2")
    (tmp_path / "started").mkdir()
    targets = [Target(torch.device("cuda", i), i, {"device_name": "fake"}) for i in range(2)]
    run = make_run(targets, visible_gpus=0)
    run.options = RunOptions(device="all", out=str(tmp_path))

    class Fake:
        NAME = "memory"
    items = [(t, Fake, harness.Case("memory", "copy", "torch", "", "plateau", "bandwidth", "GB/s", 1e9, 1, "B", 1))
             for t in targets]
    writer = ResultsWriter(tmp_path / "gate.csv", {"run_id": "x"})
    code, path = accept_gate.measure_all(run, items, writer, tmp_path / "gate.csv", timeout_s=20)
    rows = read_results(path).rows
    assert code == 0 and sorted(r["device_index"] for r in rows) == ["0", "1"]
    assert {r["status"] for r in rows} == {"ok"}


def test_the_gate_plans_one_memory_and_one_matmul_case_per_gpu():
    from bench.commands import run as run_command
    from test_collective import fake_gpu

    gpus = [fake_gpu(i) for i in range(2)]
    for g in gpus:
        g.free_bytes = lambda: 80 * 2**30
    options = accept_gate.options_for(RunOptions(), accept.load_policy().profiles["gate"])
    items = run_command.plan(make_run(gpus), options)
    per_gpu = ("memory/copy/torch/plateau", "matmul/bf16/torch/8192x8192x8192")
    assert [(str(t.device), c.id) for t, _f, c in items] == [(f"cuda:{i}", case) for i in (0, 1) for case in per_gpu]


def test_a_gate_without_cases_is_bad_input(tmp_path, capsys):
    policy = tmp_path / "policy.toml"
    policy.write_text("[profile.gate]\ncases = []\n")
    code = main(["accept", "--profile", "gate", "--policy", str(policy), "--out", str(tmp_path)])
    assert code == 2 and "[profile.gate] names no cases" in capsys.readouterr().err


# ---------------------------------------------------------------- --prometheus


@pytest.mark.parametrize("name, words", [("metrics.txt", "only reads files ending in .prom"),
                                         ("missing/cardbench.prom", "does not exist")])
@pytest.mark.parametrize("command", ["run", "accept"])
def test_a_prometheus_path_node_exporter_cannot_read_is_refused_before_measuring(tmp_path, capsys, command, name,
                                                                               words):
    with pytest.raises(SystemExit) as e:
        main([command, "--device", "cpu", "--out", str(tmp_path / "out"), "--prometheus", str(tmp_path / name)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--prometheus" in err and words in err and name.split("/")[-1] in err
    assert not (tmp_path / "out").exists()  # nothing was measured


def test_run_writes_the_prometheus_file_and_an_interrupted_run_writes_what_it_measured(tmp_path, capsys, cpu_only,
                                                                                      monkeypatch):
    from bench.families import memory

    monkeypatch.setattr(memory, "L2_FACTOR", 0)
    monkeypatch.setattr(memory, "CPU_PLATEAU_MIN", 4 * 2**20)
    prom = tmp_path / "cardbench.prom"
    args = ["run", "--device", "cpu", "--families", "memory,matmul", "--out", str(tmp_path / "out"),
            "--prometheus", str(prom)]
    real = harness.run_case
    calls = []

    def interrupted_at_matmul(family, target, case, run):
        calls.append(case.id)
        if family.NAME == "matmul":
            raise KeyboardInterrupt
        return real(family, target, case, run)
    monkeypatch.setattr(harness, "run_case", interrupted_at_matmul)
    code = main(args)
    assert code == 130 and "prometheus: " in capsys.readouterr().out
    res = read_results(next((tmp_path / "out").glob("*.csv")))
    assert not res.complete
    m = metrics(prom)
    assert m["cardbench_memory_bandwidth_bytes_per_second"].value == pytest.approx(
        1e9 * max(float(r["value"]) for r in res.rows if r["benchmark"] == "copy" and r["status"] == "ok"))
    assert "cardbench_matmul_operations_per_second" not in m  # interrupted before any matmul


def test_a_gate_worker_does_not_count_its_supervisor_as_other_work(monkeypatch):
    """The supervisor holds a context on every GPU (it planned the cases) but runs nothing there."""
    import os
    from types import SimpleNamespace

    from bench.core import identity

    procs = [SimpleNamespace(pid=os.getpid()), SimpleNamespace(pid=os.getppid()), SimpleNamespace(pid=1)]
    monkeypatch.setattr(identity.nvml, "first", lambda names, handle: procs)
    monkeypatch.setattr(identity, "OWN_PIDS", set())
    assert identity._other_processes(object()) == 2
    identity.OWN_PIDS.add(os.getppid())  # what accept_gate.worker does
    assert identity._other_processes(object()) == 1
