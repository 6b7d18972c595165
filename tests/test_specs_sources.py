"""The shipped spec database cites only public documents a reader can open.

`source_problems` reads a spec file's raw TOML, comments included, and lists what a published
report could not stand behind: a source without an http(s) URL, a figure whose source key is not
in [sources], a source nothing cites, look-up ids, private notes, documents outside the
repository, bare issue numbers, unnamed articles.
"""
import re
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import bench

SHIPPED = Path(bench.__file__).parent / "core" / "specs.toml"
URL = re.compile(r"https?://\S+")
BANNED = [
    (re.compile(r"find_string|look-?up id|\bids?\s+\d{6,}", re.IGNORECASE), "a look-up id"),
    (re.compile(r"research (doc|date|note)", re.IGNORECASE), "a private research note"),
    (re.compile(r"\b(SPECS|METHOD|ANCHORS|STYLE|DESIGN)\.md\b"), "a document outside the repository"),
    (re.compile(r"\bissue\s*#?\s*\d+|(?<![\w/&])#\d+\b", re.IGNORECASE), "an issue or pull-request number, not its URL"),
    (re.compile(r"\bthe article\b|\barticle S\d+\b", re.IGNORECASE), "an unnamed article"),
]


def source_problems(text: str) -> list[str]:
    """What makes a spec file's sources unfit to publish; [] when nothing does."""
    doc = tomllib.loads(text)
    sources = doc.get("sources", {})
    problems = [f"[sources] {key}: no http(s) URL" for key, value in sources.items() if not URL.search(value)]
    cited: set[str] = set()

    def walk(where: str, node) -> None:
        if isinstance(node, dict):
            if "source" in node:
                keys = [node["source"]] if isinstance(node["source"], str) else node["source"]
                for key in keys:
                    cited.add(key)
                    if key not in sources:
                        problems.append(f"{where}: source key {key!r} is not in [sources]")
            for key, value in node.items():
                walk(f"{where}.{key}", value)

    for i, gpu in enumerate(doc.get("gpu", [])):
        walk(f"gpu {gpu.get('name', i)!r}", gpu)
    for i, generation in enumerate(doc.get("nvlink", [])):
        walk(f"nvlink #{i + 1}", generation)
    problems += [f"[sources] {key}: cited by no figure" for key in sorted(set(sources) - cited)]
    for number, line in enumerate(text.splitlines(), 1):  # sources, notes and comments alike
        for pattern, what in BANNED:
            if pattern.search(line):
                problems.append(f"line {number}: {what}: {line.strip()[:100]}")
    return problems


def test_the_shipped_file_cites_only_public_documents():
    assert source_problems(SHIPPED.read_text(encoding="utf-8")) == []


def test_every_shipped_source_key_resolves_and_every_source_has_a_url():
    from bench.commands import specs as specs_command
    from bench.core import specs

    db = specs.load()
    sources = tomllib.loads(SHIPPED.read_text(encoding="utf-8"))["sources"]
    for e in db.entries:
        fields = specs_command.entry_json(e)
        for key, item in [*fields["figures"].items(), *fields["text"].items()]:
            assert item["source_keys"], (e.name, key)
            for k in item["source_keys"]:
                assert k in sources and URL.search(sources[k]), (e.name, key, k)


def with_source(text: str, line: str) -> str:
    return text.replace("[sources]\n", f"[sources]\n{line}\n", 1)


def with_gpu(text: str, fields: str) -> str:
    return f'{text}\n[[gpu]]\nname = "Bad Card"\n{fields}\n'


# A bad source added to the shipped file, and the words its problem must carry.
BAD = [
    (lambda t: with_source(t, "X1 = 'NVIDIA datasheet, table 2'"), "no http(s) URL"),
    (lambda t: with_source(t, "X1 = 'https://example.com/a.pdf (find_string id 69430731427)'"), "a look-up id"),
    (lambda t: with_source(t, "X1 = 'the research doc, research date 2026-09-19: https://example.com/'"),
     "a private research note"),
    (lambda t: with_source(t, "X1 = 'figures as in SPECS.md: https://example.com/'"), "outside the repository"),
    (lambda t: with_source(t, "X1 = 'https://example.com/a.pdf'"), "cited by no figure"),
    (lambda t: with_gpu(t, 'fp32 = { value = 1, unit = "TFLOP/s", source = "NOPE" }'), "is not in [sources]"),
    (lambda t: with_gpu(t, 'fp32 = { value = 1, unit = "TFLOP/s", source = "S1", note = "see issue 15" }'),
     "issue or pull-request number"),
    (lambda t: with_gpu(t, 'chip = { value = "GB202", source = "S12", note = "the article S25 says GB102" }'),
     "an unnamed article"),
    (lambda t: t.replace("# cardbench spec-sheet database", "# transcribed from METHOD.md; cardbench spec-sheet database"),
     "outside the repository"),
]


@pytest.mark.parametrize("spoil, words", BAD)
def test_a_bad_source_is_caught(spoil, words):
    problems = source_problems(spoil(SHIPPED.read_text(encoding="utf-8")))
    assert any(words in p for p in problems), problems
