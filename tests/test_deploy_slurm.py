"""deploy/slurm: the health-check wrapper and the acceptance batch job, run against stand-in
`scontrol`, `srun`, `hostname` and `cardbench` executables placed first on PATH that log their
argv. What a real Slurm does with the commands is not tested here (see the README)."""
import os
import re
import stat
import subprocess
import textwrap
from pathlib import Path

import pytest

from bench.commands import accept
from bench.core.results import ResultsWriter, read_results

REPO = Path(__file__).resolve().parent.parent
GATE = REPO / "deploy" / "slurm" / "cardbench-healthcheck.sh"
BATCH = REPO / "deploy" / "slurm" / "cardbench-accept.sbatch"

LOG_ARGV = 'd="$STANDIN_LOG"; f=$(mktemp "$d/$(date +%s%N)-$(basename "$0")-XXXX"); printf "%s\\0" "$@" >"$f"\n'
STANDINS = {
    "scontrol": LOG_ARGV + textwrap.dedent("""\
        if [ "$1 $2" = "show hostnames" ]; then for n in $FAKE_NODES; do echo "$n"; done; fi
        exit "${FAKE_SCONTROL_EXIT:-0}"
        """),
    "hostname": LOG_ARGV + 'echo "${FAKE_HOSTNAME:-gpu-fallback}"\n',
    "cardbench": LOG_ARGV + textwrap.dedent("""\
        [ -n "${FAKE_OUTPUT:-}" ] && cat "$FAKE_OUTPUT"
        [ -n "${FAKE_SLEEP:-}" ] && sleep "$FAKE_SLEEP"
        [ "$1" = report ] && exit 0
        var="FAKE_EXIT_${SLURMD_NODENAME:-none}"
        exit "${!var:-${FAKE_EXIT:-0}}"
        """),
    # Runs the step's command once per node of $FAKE_NODES (except $FAKE_SRUN_SKIP), as srun
    # runs one task per node; returns the highest exit code, as srun does.
    "srun": LOG_ARGV + textwrap.dedent("""\
        while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do shift; done
        worst=0
        for n in $FAKE_NODES; do
            case " ${FAKE_SRUN_SKIP:-} " in *" $n "*) continue ;; esac
            SLURMD_NODENAME=$n "$@"; c=$?
            [ $c -gt $worst ] && worst=$c
        done
        exit $worst
        """),
}


@pytest.fixture
def slurm(tmp_path):
    """Returns run(script, **env) -> (CompletedProcess, calls): calls = [(tool, argv), ...] in order."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    log.mkdir()
    for name, body in STANDINS.items():
        p = bin_dir / name
        p.write_text("#!/usr/bin/env bash\n" + body)
        p.chmod(p.stat().st_mode | stat.S_IXUSR)

    def run(script: Path, **env):
        full = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "STANDIN_LOG": str(log), "HOME": str(tmp_path),
                "CARDBENCH_CONFIG": str(tmp_path / "no-config")}
        full.update({k: str(v) for k, v in env.items()})
        proc = subprocess.run(["bash", str(script)], env=full, cwd=tmp_path, capture_output=True, text=True,
                              timeout=60)
        calls = []
        for f in sorted(log.iterdir()):
            tool = f.name.split("-")[1]
            calls.append((tool, f.read_bytes().decode().split("\0")[:-1]))
            f.unlink()
        return proc, calls
    return run


def tool(calls, name):
    return [argv for t, argv in calls if t == name]


def accept_output(tmp_path, memory_pct: str) -> Path:
    """What `cardbench accept` really prints for an H100 whose memory copy reached memory_pct% of spec."""
    w = ResultsWriter(tmp_path / "run.csv", {"run_id": "0123456789ab", "host": "gpu07", "device_index": "3",
                                             "device_name": "NVIDIA H100 80GB HBM3", "device_uuid": "GPU-1234"})
    w.write({"family": "memory", "benchmark": "copy", "provider": "triton", "dtype": "fp32", "case": "plateau",
             "unit": "GB/s", "status": "ok", "value": 33.5 * float(memory_pct), "pct_of_spec": memory_pct})
    w.close()
    out = tmp_path / "accept.txt"
    out.write_text(accept.render(accept.judge(read_results(tmp_path / "run.csv").rows, accept.load_policy())))
    return out


def test_scripts_are_valid_bash_and_executable():
    for script in (GATE, BATCH):
        subprocess.run(["bash", "-n", str(script)], check=True)
        assert os.access(script, os.X_OK), script


# ---------------------------------------------------------------------------------------
# The health check / prolog wrapper


def test_gate_pass_runs_the_gate_profile_and_drains_nothing(slurm, tmp_path):
    proc, calls = slurm(GATE, SLURMD_NODENAME="node07", CARDBENCH_RESULTS=tmp_path / "res", FAKE_EXIT=0)
    assert proc.returncode == 0, proc.stderr
    assert tool(calls, "cardbench") == [["accept", "--profile", "gate", "--out", str(tmp_path / "res")]]
    assert tool(calls, "scontrol") == []
    _, calls = slurm(GATE, SLURMD_NODENAME="node07", CARDBENCH_RESULTS=tmp_path / "res", CARDBENCH_PROFILE="")
    assert tool(calls, "cardbench") == [["accept", "--out", str(tmp_path / "res")]]  # accept's default profile


def test_gate_fail_drains_the_node_with_the_first_failing_check(slurm, tmp_path):
    out = accept_output(tmp_path, "50.0")  # below the 80% memory-copy bar: FAIL
    proc, calls = slurm(GATE, SLURMD_NODENAME="node07", FAKE_EXIT=1, FAKE_OUTPUT=out)
    assert proc.returncode == 1
    (argv,) = tool(calls, "scontrol")
    assert argv[:3] == ["update", "nodename=node07", "state=drain"] and len(argv) == 4
    assert argv[3].startswith("reason=cardbench: cuda:3 FAIL memory-copy 1,675.0 GB/s = 50.0% >= 80% of spec")
    assert "memory-copy" in proc.stdout  # accept's output is passed on to the log


def test_gate_without_slurmd_nodename_asks_hostname(slurm, tmp_path):
    proc, calls = slurm(GATE, FAKE_EXIT=1, FAKE_OUTPUT=accept_output(tmp_path, "50.0"), FAKE_HOSTNAME="gpu-r7-03")
    assert tool(calls, "hostname") == [["-s"]]
    assert tool(calls, "scontrol")[0][1] == "nodename=gpu-r7-03"


def test_reason_is_one_safe_line_whatever_the_output_holds(slurm, tmp_path):
    out = tmp_path / "evil.txt"
    out.write_text('cuda:0 NVIDIA "H100": FAIL\nverdict  check\n'
                   'FAIL   my "quoted"   check $(touch PWNED) `touch PWNED2`; rm -rf nothing \x1b[31m\'x\'\n'
                   + "FAIL  second " + "y" * 500 + "\n")
    proc, calls = slurm(GATE, SLURMD_NODENAME="n1", FAKE_EXIT=1, FAKE_OUTPUT=out)
    (argv,) = tool(calls, "scontrol")
    reason = argv[3]
    assert reason.startswith('reason=cardbench: cuda:0 FAIL my "quoted" check $(touch PWNED) `touch PWNED2`; '
                             "rm -rf nothing ")
    assert "second" not in reason and reason.isprintable() and "\x1b" not in reason
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "PWNED2").exists()
    long_out = tmp_path / "long.txt"
    long_out.write_text("cuda:1 X: FAIL\nFAIL " + "z" * 500 + "\n")
    _, calls = slurm(GATE, SLURMD_NODENAME="n1", FAKE_EXIT=1, FAKE_OUTPUT=long_out)
    assert len(tool(calls, "scontrol")[0][3]) == len("reason=") + 200


def test_inconclusive_drains_by_default_and_passes_when_configured(slurm, tmp_path):
    out = accept_output(tmp_path, "90.0")  # memory passes, every NVML check is INCONCLUSIVE
    proc, calls = slurm(GATE, SLURMD_NODENAME="node07", FAKE_EXIT=2, FAKE_OUTPUT=out)
    assert proc.returncode == 2
    (argv,) = tool(calls, "scontrol")
    assert argv[3].startswith("reason=cardbench: cuda:3 INCONCLUSIVE matmul-bf16")
    proc, calls = slurm(GATE, SLURMD_NODENAME="node07", FAKE_EXIT=2, FAKE_OUTPUT=out, CARDBENCH_ON_INCONCLUSIVE="pass")
    assert proc.returncode == 0 and tool(calls, "scontrol") == []
    assert "CARDBENCH_ON_INCONCLUSIVE=pass keeps it in service" in proc.stdout
    proc, calls = slurm(GATE, SLURMD_NODENAME="node07", CARDBENCH_ON_INCONCLUSIVE="maybe")
    assert proc.returncode == 3 and "expected drain or pass" in proc.stderr and calls == []


def test_a_hung_or_missing_cardbench_drains(slurm, tmp_path):
    proc, calls = slurm(GATE, SLURMD_NODENAME="n1", CARDBENCH_TIMEOUT=1, FAKE_SLEEP=30)
    assert proc.returncode == 124
    assert tool(calls, "scontrol")[0][3] == "reason=cardbench: the gate did not finish within 1 s"
    proc, calls = slurm(GATE, SLURMD_NODENAME="n1", CARDBENCH=tmp_path / "no-such-cardbench")
    assert proc.returncode == 127
    assert tool(calls, "scontrol")[0][3] == f"reason=cardbench: cannot run '{tmp_path / 'no-such-cardbench'}' (exit 127)"


def test_a_failure_without_a_check_row_gives_the_last_line(slurm, tmp_path):
    out = tmp_path / "err.txt"
    out.write_text("Traceback (most recent call last):\n  ...\nRuntimeError:   CUDA   error: unknown error\n\n")
    _, calls = slurm(GATE, SLURMD_NODENAME="n1", FAKE_EXIT=1, FAKE_OUTPUT=out)
    assert tool(calls, "scontrol")[0][3] == "reason=cardbench: exit 1: RuntimeError: CUDA error: unknown error"


def test_settings_file_is_read_as_text_and_the_environment_wins(slurm, tmp_path):
    config = tmp_path / "cardbench.conf"
    config.write_text("# slurmd passes no environment\n"
                      "CARDBENCH_PROFILE=quick\n"
                      "CARDBENCH_RESULTS=/srv/results $(touch PWNED)\n"
                      "CARDBENCH_ON_INCONCLUSIVE=drain\n"
                      "PATH=/nowhere\n"
                      "CARDBENCH_PROMETHEUS=/var/lib/node_exporter/textfile_collector/cardbench.prom")
    proc, calls = slurm(GATE, SLURMD_NODENAME="n1", CARDBENCH_CONFIG=config, CARDBENCH_ON_INCONCLUSIVE="pass",
                        FAKE_EXIT=2)
    assert proc.returncode == 0 and tool(calls, "scontrol") == []  # the environment's `pass` won
    assert tool(calls, "cardbench") == [["accept", "--profile", "quick", "--out", "/srv/results $(touch PWNED)",
                                         "--prometheus", "/var/lib/node_exporter/textfile_collector/cardbench.prom"]]
    assert not (tmp_path / "PWNED").exists()


def test_prometheus_file_is_passed_on(slurm, tmp_path):
    _, calls = slurm(GATE, SLURMD_NODENAME="n1", CARDBENCH_PROMETHEUS="/var/lib/node_exporter/cardbench.prom")
    assert tool(calls, "cardbench")[0][-2:] == ["--prometheus", "/var/lib/node_exporter/cardbench.prom"]


# ---------------------------------------------------------------------------------------
# The acceptance batch job


def batch_env(tmp_path, **extra):
    env = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "node[01-03]", "SLURM_JOB_NUM_NODES": "3",
           "FAKE_NODES": "node01 node02 node03", "CARDBENCH_RESULTS": tmp_path / "shared"}
    env.update(extra)
    return env


def test_batch_one_task_per_node_then_the_report_and_the_worst_verdict(slurm, tmp_path):
    proc, calls = slurm(BATCH, **batch_env(tmp_path, FAKE_EXIT_node02=1, FAKE_EXIT_node03=2))
    shared = tmp_path / "shared"
    assert proc.returncode == 1, proc.stderr
    (srun,) = tool(calls, "srun")
    assert "--ntasks-per-node=1" in srun and "--kill-on-bad-exit=0" in srun
    accepts = [argv for argv in tool(calls, "cardbench") if argv[0] == "accept"]
    assert accepts == [["accept", "--out", str(shared), "--junit", f"{shared}/junit/{n}.xml"]
                       for n in ("node01", "node02", "node03")]
    assert [(shared / "status" / n).read_text().strip() for n in ("node01", "node02", "node03")] == ["0", "1", "2"]
    assert calls[-1] == ("cardbench", ["report", str(shared), "--out", f"{shared}/report"])  # last, after all nodes
    assert "FAIL: node02" in proc.stdout and "INCONCLUSIVE: node03" in proc.stdout


def test_batch_all_pass_exits_0(slurm, tmp_path):
    proc, calls = slurm(BATCH, **batch_env(tmp_path))
    assert proc.returncode == 0 and "FAIL: none" in proc.stdout
    assert calls[-1][1][0] == "report"


def test_batch_a_node_without_a_verdict_is_not_a_pass(slurm, tmp_path):
    proc, _ = slurm(BATCH, **batch_env(tmp_path, FAKE_SRUN_SKIP="node03"))
    assert proc.returncode == 2 and "no verdict (the task did not run or was killed): node03" in proc.stdout


def test_batch_outside_slurm_says_how_to_submit(slurm):
    proc, calls = slurm(BATCH)
    assert proc.returncode == 2 and "sbatch --nodes=N" in proc.stderr and calls == []


def test_batch_header_asks_one_task_on_each_of_n_nodes():
    directives = re.findall(r"^#SBATCH (\S+)", BATCH.read_text(), re.M)
    assert any(d.startswith("--nodes=") for d in directives) and "--ntasks-per-node=1" in directives
    assert not any(d.startswith("--array") for d in directives)
