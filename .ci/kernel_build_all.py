"""The all-configurations kernel build of .ci/gpu-check: one pytest per target (compute capability
9.0, 10.0, 12.0) side by side, since the GPU image has no pytest-xdist, and their JUnit files merged
into one for .ci/gpu_summary.py.

    python .ci/kernel_build_all.py JUNIT_XML

Exit code: the worst of the three pytest runs (5 when nothing was collected).
"""
from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

TARGETS = ("9.0", "10.0", "12.0")
TEST = "tests/test_kernel_build.py"
PYTEST = [sys.executable, "-m", "pytest", "-m", "kernel_build_all", "-q", "-p", "no:cacheprovider"]


def shards(node_ids: list[str]) -> dict[str, list[str]]:
    """The test ids per target ("...[9.0-matmul/bf16]"); ids of no known target in a shard of their own."""
    out = {cc: [i for i in node_ids if f"[{cc}-" in i] for cc in TARGETS}
    rest = [i for i in node_ids if not any(i in ids for ids in out.values())]
    return {name: ids for name, ids in {**out, "other": rest}.items() if ids}


def merge(parts: list[Path], junit: Path) -> None:
    """One <testsuites> file holding every part's suites; a part that is missing or unreadable is left out."""
    merged = ET.Element("testsuites")
    for part in parts:
        try:
            root = ET.parse(part).getroot()
        except (OSError, ET.ParseError):
            continue
        merged.extend([root] if root.tag == "testsuite" else list(root))
    ET.ElementTree(merged).write(junit, encoding="utf-8", xml_declaration=True)


def main(junit: Path) -> int:
    listing = subprocess.run([*PYTEST, TEST, "--collect-only"], capture_output=True, text=True, check=False)
    ids = [line for line in listing.stdout.splitlines() if "::" in line]
    if not ids:
        print(listing.stdout[-2000:] + listing.stderr[-2000:])
        return 5
    parts = {name: junit.with_name(f"{junit.stem}.{name}.xml") for name in shards(ids)}
    runs = {name: subprocess.Popen([*PYTEST, f"--junitxml={parts[name]}", *part])
            for name, part in shards(ids).items()}
    codes = {name: run.wait() for name, run in runs.items()}
    merge(list(parts.values()), junit)
    for part in parts.values():
        part.unlink(missing_ok=True)
    for name, code in codes.items():
        print(f"kernel build {name}: pytest exit {code}")
    return max(codes.values())


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
