"""What the repository cites, a reader can open: no document that is not in the repository, no
bare issue number (a link to the issue instead). Comments, docstrings, data files and docs alike."""
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCUMENT = re.compile(r"(?<![/\w])([A-Z][A-Z0-9_-]*\.md)\b")  # a path (doc/X.md) or a URL names its repository
ISSUE = re.compile(r"\bissues?\s*#?\d+\b(?!-)|\bPR\s*#?\d+\b", re.IGNORECASE)
# Deliberately bad sources, to prove the spec file's own check catches them.
EXAMPLES_OF_BAD_SOURCES = {"tests/test_specs_sources.py", "tests/test_references.py"}


def tracked_text_files() -> list[Path]:
    try:
        names = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: the folders the project keeps
        names = [str(p.relative_to(REPO)) for top in ("bench", "kernels", "tests", "deploy", ".ci", "results")
                 for p in (REPO / top).rglob("*") if "__pycache__" not in p.parts]
        names += ["README.md", "conftest.py", "pyproject.toml"]
    files = []
    for name in names:
        path = REPO / name
        if name in EXAMPLES_OF_BAD_SOURCES or not path.is_file() or path.suffix in (".csv", ".json", ".png"):
            continue
        try:
            path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        files.append(path)
    return files


def test_no_reference_to_a_document_outside_the_repository_or_to_a_bare_issue_number():
    problems = []
    documents = {p.name for p in REPO.rglob("*.md") if ".git" not in p.parts}
    for path in tracked_text_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            where = f"{path.relative_to(REPO)}:{number}"
            problems += [f"{where}: {doc} is not in the repository" for doc in DOCUMENT.findall(line)
                         if doc not in documents and "https://" not in line]
            problems += [f"{where}: '{m.group(0)}' without its URL" for m in ISSUE.finditer(line)]
    assert problems == []


def test_the_check_sees_what_it_must():
    assert DOCUMENT.findall("as METHOD.md 2.1 says; see README.md") == ["METHOD.md", "README.md"]
    assert DOCUMENT.findall("nccl-tests' doc/PERFORMANCE.md") == []
    assert [m.group(0) for m in ISSUE.finditer("fixed by issue 2 (nvbandwidth issue #24), PR 7")] == [
        "issue 2", "issue #24", "PR 7"]
    assert not ISSUE.search("https://github.com/NVIDIA/nvbandwidth/issues/24; kernels issue 4-byte accesses")
