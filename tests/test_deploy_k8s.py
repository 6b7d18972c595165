"""deploy/k8s: the manifests parse, carry what a GPU acceptance Job needs, agree with each other
and with the README's recipe (whose render commands are run here). Whether a cluster accepts
and schedules them is not tested (see the README)."""
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from bench.cli import parser

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "deploy" / "k8s"
README = (REPO / "README.md").read_text()


def docs(name):
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d is not None]


def one(name):
    (doc,) = docs(name)
    return doc


def pod_spec(job_spec):
    return job_spec["template"]["spec"]


def section(title):
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 1)
    return README[start:end]


def cluster_blocks(lang=""):
    """The fenced code blocks of the README's cluster section with this language tag."""
    blocks = re.findall(r"^```(\w*)\n(.*?)\n```$", section("Running on a cluster"), re.S | re.M)
    return [body for tag, body in blocks if tag == lang]


def test_every_manifest_parses_with_the_required_fields():
    names = sorted(p.name for p in K8S.glob("*.yaml"))
    assert names == ["cronjob.yaml", "job.yaml", "namespace.yaml", "priorityclass.yaml"]
    for name in names:
        for d in docs(name):
            assert d["apiVersion"] and d["kind"] and d["metadata"]["name"], name


def test_the_job_runs_once_on_one_node_with_every_gpu_at_low_priority():
    job = one("job.yaml")
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["podFailurePolicy"]["rules"] == [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]  # preemption is not a failure
    pod = pod_spec(spec)
    assert pod["restartPolicy"] == "Never"
    term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term == [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["NODE_NAME"]}]}]
    (container,) = pod["containers"]
    assert container["image"] and container["command"][:2] == ["cardbench", "accept"]
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert job["metadata"]["namespace"] == one("namespace.yaml")["metadata"]["name"]


def test_the_priority_class_is_below_ordinary_pods_and_preempts_nothing():
    pc = one("priorityclass.yaml")
    assert pc["kind"] == "PriorityClass" and pc["metadata"]["name"] == pod_spec(one("job.yaml")["spec"])[
        "priorityClassName"]
    assert pc["value"] < 0 and pc["preemptionPolicy"] == "Never" and pc["globalDefault"] is False


def test_results_and_the_prom_file_land_on_mounted_host_directories():
    pod = pod_spec(one("job.yaml")["spec"])
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}  # every mount has a volume
    cmd = container["command"]
    out, prom = cmd[cmd.index("--out") + 1], cmd[cmd.index("--prometheus") + 1]
    assert "hostPath" in mounts[out]
    assert prom.endswith(".prom") and "hostPath" in mounts[str(Path(prom).parent)]
    assert mounts["/dev/shm"]["emptyDir"]["medium"] == "Memory"


def test_the_cronjob_runs_the_same_job_and_never_two_at_once():
    cron = one("cronjob.yaml")
    assert (cron["apiVersion"], cron["kind"]) == ("batch/v1", "CronJob")
    assert cron["spec"]["jobTemplate"]["spec"] == one("job.yaml")["spec"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert len(cron["spec"]["schedule"].split()) == 5
    assert len(cron["metadata"]["name"].replace("NODE_NAME", "")) + 42 <= 52  # the documented node-name room


def test_the_readme_shows_the_command_the_pods_run():
    command = pod_spec(one("job.yaml")["spec"])["containers"][0]["command"]
    assert " ".join(command) in cluster_blocks()
    assert pod_spec(one("job.yaml")["spec"])["containers"][0]["image"] == f"cardbench:{version()}"


def version():
    return re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)


@pytest.mark.parametrize("manifest", ["job.yaml", "cronjob.yaml"])
def test_the_readme_render_commands_fill_in_node_and_image(manifest):
    (block,) = [b for b in cluster_blocks("sh") if "kubectl create" in b]
    (line,) = [l for l in block.splitlines() if f"deploy/k8s/{manifest}" in l]
    render = line.strip().split(" | kubectl")[0]
    assert shlex.split(render)[0] == "sed"
    image = "registry.example.com/gpu/cardbench:0.1.0"
    out = subprocess.run(["bash", "-c", render], cwd=REPO, capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "node": "gpu-node-07", "IMAGE": image}).stdout
    (doc,) = [d for d in yaml.safe_load_all(out) if d]
    assert "NODE_NAME" not in out and doc["metadata"]["name"] == "cardbench-gpu-node-07"
    spec = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    pod = pod_spec(spec)
    assert pod["containers"][0]["image"] == image
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[0]["matchFields"][0]["values"] == ["gpu-node-07"]


def test_the_readme_builds_the_image_from_the_shipped_dockerfile():
    (block,) = [b for b in cluster_blocks("sh") if "docker build" in b]
    assert "-f deploy/k8s/Dockerfile" in block and (K8S / "Dockerfile").exists()
    copied = re.findall(r"^COPY (.+) /opt/cardbench", (K8S / "Dockerfile").read_text(), re.M)
    assert all((REPO / p).exists() for c in copied for p in c.split())


def test_the_pod_command_is_one_cardbench_accepts(tmp_path):
    """Every option the manifests pass exists in the CLI (the .prom directory is the node's: a stand-in here)."""
    command = pod_spec(one("job.yaml")["spec"])["containers"][0]["command"]
    at = command.index("--prometheus")
    assert command[at + 1].endswith(".prom")
    command[at + 1] = str(tmp_path / "cardbench.prom")
    args = parser().parse_args(command[1:])
    assert args.command == "accept" and args.prometheus == tmp_path / "cardbench.prom"
