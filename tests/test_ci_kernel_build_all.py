""".ci/kernel_build_all.py: the all-configurations build split by target and its JUnit files merged
(the build itself runs in .ci/gpu-check; here the splitting and the merge, with small inputs)."""
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("kernel_build_all", ROOT / ".ci" / "kernel_build_all.py")
kba = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kba)
sys.path.insert(0, str(ROOT / ".ci"))
import gpu_summary  # noqa: E402


def test_the_build_is_split_one_target_per_shard():
    ids = [f"t.py::test_x[{cc}-{k}]" for cc in ("9.0", "10.0", "12.0") for k in ("matmul/bf16", "memory/read")]
    assert kba.shards(ids + ["t.py::test_y"]) == {
        "9.0": ["t.py::test_x[9.0-matmul/bf16]", "t.py::test_x[9.0-memory/read]"],
        "10.0": ["t.py::test_x[10.0-matmul/bf16]", "t.py::test_x[10.0-memory/read]"],
        "12.0": ["t.py::test_x[12.0-matmul/bf16]", "t.py::test_x[12.0-memory/read]"],
        "other": ["t.py::test_y"]}
    assert kba.shards(ids[:2]) == {"9.0": ids[:2]}


def test_the_parts_merge_into_one_file_the_summary_counts(tmp_path):
    a, b = tmp_path / "a.xml", tmp_path / "b.xml"
    a.write_text('<testsuites><testsuite name="pytest" tests="8" failures="1" errors="0" skipped="1"/></testsuites>')
    b.write_text('<testsuite name="pytest" tests="8" failures="0" errors="0" skipped="0"/>')
    (tmp_path / "torn.xml").write_text("<testsuites><testsu")
    out = tmp_path / "junit.xml"
    kba.merge([a, b, tmp_path / "torn.xml", tmp_path / "missing.xml"], out)
    assert gpu_summary._junit(out) == {"file": "junit.xml", "tests": 16, "failures": 1, "errors": 0, "skipped": 1,
                                       "passed": 14}
