"""Spec-sheet database: what each card's vendor claims, with sources, and what a measurement is compared with.

The data is `bench/core/specs.toml` (shipped with the package) plus an optional user file of the
same layout (`--specs FILE`). Every figure has a unit and a source (a public document: vendor
datasheet, whitepaper, product page or public repository file, with its URL); a figure no source
supports is absent. A figure's `confidence` is "official" (printed by the vendor), "derived"
(arithmetic from printed figures, formula in its note; `cardbench accept` does not pass or fail a
card on it until a user file confirms it) or "disputed" (documents disagree; the other value is
in its note).

Figure vocabulary (key: allowed units: meaning)
    sm_count: count: streaming multiprocessors
    boost_clock_mhz: MHz: boost (max) SM clock
    memory_size_gb: GB: device memory
    memory_bus_width_bits: bit: memory bus width
    memory_bandwidth: GB/s, TB/s: device memory bandwidth
    l2_cache_mb: MB: L2 cache
    <t>_dense, <t>_sparse: TFLOP/s (int8: TOPS): tensor-core throughput without / with 2:4
        structured sparsity, for <t> in tf32, bf16, fp16, fp16_acc16, fp8, fp8_acc16, fp6, fp4, int8.
        fp16 / bf16 / fp8 are the rates with FP32 accumulation (what PyTorch GEMMs use);
        fp16_acc16 / fp8_acc16 are the FP16-accumulate rates GeForce cards run twice as fast.
    fp32, fp64: TFLOP/s: non-tensor (CUDA core) throughput
    fp64_tensor: TFLOP/s: FP64 on tensor cores (DMMA)
    pcie_gen: gen; pcie_lanes: lanes: the card's PCIe link
    nvlink_bidir: GB/s, TB/s: NVLink per GPU, both directions together (what NVIDIA prints)
    nvlink_per_direction: GB/s, TB/s: NVLink per GPU, one direction
    tdp_w: W: board power (TDP / TGP)
Text fields (each { value = "...", source = ... }): chip, memory_type, form_factor,
compute_capability ("9.0"), nvlink (generation and links, "bridge", or "none").
Units are decimal: GB/s = 1e9 B/s, TFLOP/s = 1e12 FLOP/s.
"""
from __future__ import annotations

import difflib
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

SHIPPED_LABEL = "bench/core/specs.toml"
CONFIDENCES = ("official", "derived", "disputed")
UNITS = ("GB/s", "TB/s", "TFLOP/s", "TOPS", "MHz", "GB", "MB", "bit", "W", "count", "gen", "lanes")
WHOLE_UNITS = ("count", "gen", "lanes", "bit")

TENSOR_TYPES = {
    "tf32": "TF32", "bf16": "BF16 (FP32 accumulate)", "fp16": "FP16 (FP32 accumulate)",
    "fp16_acc16": "FP16 with FP16 accumulate", "fp8": "FP8 (FP32 accumulate)",
    "fp8_acc16": "FP8 with FP16 accumulate", "fp6": "FP6", "fp4": "FP4", "int8": "INT8",
}
FIGURES: dict[str, tuple[tuple[str, ...], str]] = {
    "sm_count": (("count",), "streaming multiprocessors"),
    "boost_clock_mhz": (("MHz",), "boost SM clock"),
    "memory_size_gb": (("GB",), "device memory"),
    "memory_bus_width_bits": (("bit",), "memory bus width"),
    "memory_bandwidth": (("GB/s", "TB/s"), "memory bandwidth"),
    "l2_cache_mb": (("MB",), "L2 cache"),
    **{f"{t}_{kind}": (("TOPS",) if t == "int8" else ("TFLOP/s",), f"{label} tensor, {kind}")
       for t, label in TENSOR_TYPES.items() for kind in ("dense", "sparse")},
    "fp32": (("TFLOP/s",), "FP32 non-tensor"),
    "fp64": (("TFLOP/s",), "FP64 non-tensor"),
    "fp64_tensor": (("TFLOP/s",), "FP64 tensor"),
    "pcie_gen": (("gen",), "PCIe generation"),
    "pcie_lanes": (("lanes",), "PCIe lanes"),
    "nvlink_bidir": (("GB/s", "TB/s"), "NVLink, both directions"),
    "nvlink_per_direction": (("GB/s", "TB/s"), "NVLink, per direction"),
    "tdp_w": (("W",), "board power"),
}
TEXT_KEYS = ("chip", "memory_type", "form_factor", "compute_capability", "nvlink")
ENTRY_KEYS = ("name", "aliases", "nvml_names", "pci_device_ids", "note")
NORMALIZE_KEYS = ("spec_entry", "spec_figure", "spec_value", "spec_unit", "spec_source",
                  "pct_of_spec", "derived_peak", "pct_of_derived")

# Rate units a measurement row may carry: (quantity, scale to the base unit).
_RATES = {"B/s": ("bytes", 1.0), "MB/s": ("bytes", 1e6), "GB/s": ("bytes", 1e9), "TB/s": ("bytes", 1e12),
          "GFLOP/s": ("flop", 1e9), "TFLOP/s": ("flop", 1e12), "PFLOP/s": ("flop", 1e15),
          "GOPS": ("ops", 1e9), "TOPS": ("ops", 1e12), "POPS": ("ops", 1e15)}
_PCI_ID = re.compile(r"0x[0-9a-fA-F]{4}")
NVIDIA_VENDOR_ID = 0x10DE
# NVML names a MIG slice after its card plus the profile: "NVIDIA H200 MIG 1g.18gb",
# "NVIDIA A100-SXM4-40GB MIG 1c.2g.10gb", "NVIDIA H100 80GB HBM3 MIG 1g.10gb+me".
_MIG_SLICE = re.compile(r"\bMIG\s+(?:\d+c\.)?\d+g\.\d+gb", re.IGNORECASE)
MIG_NO_ENTRY = "MIG slice: normalized against nothing unless a spec entry names this slice"


class SpecError(ValueError):
    """A spec file that cannot be used; the message names the file, the entry and the field."""

    def __init__(self, file: str, message: str, where: str = "", field: str = ""):
        place = ", ".join(p for p in (where, field and f"field '{field}'") if p)
        super().__init__(f"{file}: {place + ': ' if place else ''}{message}")
        self.file, self.where, self.field = file, where, field


@dataclass(frozen=True)
class Figure:
    key: str
    value: float
    unit: str
    source: str  # the document(s), resolved from [sources]; several joined by "; "
    note: str = ""
    confidence: str = ""
    origin: str = "shipped"  # "shipped" or the user file that set it
    source_refs: tuple[tuple[str, str], ...] = ()  # (key, document) pairs

    @property
    def sparsity(self) -> str:
        return "dense" if self.key.endswith("_dense") else "sparse" if self.key.endswith("_sparse") else ""


@dataclass(frozen=True)
class TextField:
    key: str
    value: str
    source: str
    note: str = ""
    confidence: str = ""
    origin: str = "shipped"
    source_refs: tuple[tuple[str, str], ...] = ()


@dataclass
class Entry:
    name: str
    nvml_names: list[str]
    pci_device_ids: list[str]
    aliases: list[str]
    text: dict[str, str]
    figures: dict[str, Figure]
    origin: str  # "shipped", or the user file that added or changed the entry
    note: str = ""
    text_fields: dict[str, TextField] = field(default_factory=dict)  # text with sources

    def claims(self) -> list[str]:
        """Every string `find` accepts for this entry."""
        return [self.name, *self.aliases, *self.nvml_names]


@dataclass(frozen=True)
class NvlinkGeneration:
    generation: int
    gpus: str
    links: int
    per_direction: Figure


@dataclass
class SpecDB:
    entries: list[Entry]
    nvlink: dict[int, NvlinkGeneration] = field(default_factory=dict)

    def match(self, nvml_name: str, pci_device_id: str = "") -> Entry | None:
        """The entry of the card NVML reports; never a fuzzy or substring guess.

        1. the NVML name, exactly (case-sensitive, surrounding whitespace ignored);
        2. an alias, exactly (a user file can alias an old driver's name);
        3. only when the name is unknown: the PCI device id, if exactly one entry lists it.
        When the name and the id point to different entries the name wins: the driver derives
        the name from the full PCI id (device and subsystem), so it is the finer of the two;
        one device id can carry several products (GH200 480GB and 120GB share 0x2342).
        A MIG slice ("NVIDIA H200 MIG 1g.18gb") reports its card's PCI id but has a fraction
        of its SMs and memory: only an entry naming the slice matches it, never the id.
        """
        name = (nvml_name or "").strip()
        if name:
            for e in self.entries:
                if name in e.nvml_names:
                    return e
            for e in self.entries:
                if name in e.aliases:
                    return e
            if mig_slice(name):
                return None
        device = pci_device(pci_device_id)
        if device is None:
            return None
        hits = [e for e in self.entries if device in {int(p, 16) for p in e.pci_device_ids}]
        return hits[0] if len(hits) == 1 else None

    def find(self, query: str) -> Entry | None:
        """Entry by name, alias or NVML name: case-insensitive, exact."""
        q = query.strip().casefold()
        return next((e for e in self.entries if q in {c.casefold() for c in e.claims()}), None)

    def close_names(self, query: str, n: int = 6) -> list[str]:
        """Entry names to suggest for a query `find` did not know (a suggestion, never a match)."""
        q = query.strip().casefold()
        owner = {c.casefold(): e.name for e in self.entries for c in e.claims()}
        picked = [owner[c] for c in owner if q and (q in c or c in q)]
        picked += [owner[c] for c in difflib.get_close_matches(q, list(owner), n=n, cutoff=0.6)]
        return list(dict.fromkeys(picked))[:n]


# ---------------------------------------------------------------- loading and validation

def load(user_file: str | os.PathLike | None = None) -> SpecDB:
    """The shipped database, with `user_file`'s entries added or merged in.

    A user entry whose name is a known entry name, alias or NVML name (case-insensitive)
    changes that entry field by field: each figure or text field it gives replaces the shipped
    one, the others stay; its aliases, NVML names and PCI ids are added; its note replaces.
    Any other user entry is a new entry. Nothing is removed. A user file's `source` keys
    resolve against its own [sources] first, then the shipped ones. Raises SpecError.
    """
    db = SpecDB([])
    shipped = resources.files(__package__).joinpath("specs.toml").read_bytes()
    sources = _load_file(db, SHIPPED_LABEL, "shipped", shipped, {})
    if user_file is not None:
        label = os.fspath(user_file)
        try:
            data = Path(label).read_bytes()
        except OSError as e:
            raise SpecError(label, f"cannot read: {e.strerror or e}") from None
        _load_file(db, label, label, data, sources)
    return db


def _load_file(db: SpecDB, label: str, origin: str, data: bytes, inherited: dict[str, str]) -> dict[str, str]:
    """Parse, validate and add one file to `db`; returns its sources (with the inherited ones)."""
    sources, default, gpus, nvlinks = _parse_file(label, data, inherited)
    _add_entries(db, [_entry(label, origin, g, i, sources, default) for i, g in enumerate(gpus)], label)
    for raw in nvlinks:
        g = _nvlink(label, origin, raw, sources, default)
        db.nvlink[g.generation] = g
    return sources


def _parse_file(label: str, data: bytes, inherited: dict[str, str]):
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise SpecError(label, f"not UTF-8 text: {e}") from None
    except tomllib.TOMLDecodeError as e:  # the message ends with "(at line L, column C)"
        raise SpecError(label, f"not valid TOML: {e}") from None
    unknown = sorted(set(doc) - {"sources", "default_confidence", "gpu", "nvlink"})
    if unknown:
        raise SpecError(label, f"unknown top-level key '{unknown[0]}'; expected sources, default_confidence, "
                        "[[gpu]], [[nvlink]]", field=unknown[0])
    own = doc.get("sources", {})
    if not isinstance(own, dict):
        raise SpecError(label, "[sources] must be a table of key = \"document or URL\"", field="sources")
    for key, text in own.items():
        if not isinstance(text, str) or not text.strip():
            raise SpecError(label, f"[sources] key '{key}' must be a non-empty string", field="sources")
    default = doc.get("default_confidence", "")
    if default not in ("", *CONFIDENCES):
        raise SpecError(label, f"default_confidence must be one of {', '.join(CONFIDENCES)}",
                        field="default_confidence")
    gpus, nvlinks = doc.get("gpu", []), doc.get("nvlink", [])
    for key, rows in (("gpu", gpus), ("nvlink", nvlinks)):
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise SpecError(label, f"'{key}' must be an array of tables: [[{key}]]", field=key)
    return {**inherited, **own}, default, gpus, nvlinks


def _source(label: str, where: str, key: str, raw, sources: dict[str, str]):
    keys = [raw] if isinstance(raw, str) else raw
    if raw is None:
        raise SpecError(label, "missing source: every figure needs `source` (a key of [sources])", where, key)
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        raise SpecError(label, "source must be a key of [sources] or a list of keys", where, key)
    for k in keys:
        if k not in sources:
            raise SpecError(label, f"source '{k}' is not a key of [sources]", where, key)
    refs = tuple((k, sources[k]) for k in keys)
    return "; ".join(t for _, t in refs), refs


def _meta(label: str, where: str, key: str, raw: dict, default: str):
    note, confidence = raw.get("note", ""), raw.get("confidence", default)
    if not isinstance(note, str):
        raise SpecError(label, "note must be a string", where, key)
    if confidence not in ("", *CONFIDENCES):
        raise SpecError(label, f"confidence '{confidence}' is not one of {', '.join(CONFIDENCES)}", where, key)
    return note, confidence


def _figure(label, origin, where, key, raw, sources, default) -> Figure:
    units, _ = FIGURES[key]
    if not isinstance(raw, dict):
        raise SpecError(label, 'a figure is a table: { value = N, unit = "...", source = "S1" }', where, key)
    extra = sorted(set(raw) - {"value", "unit", "source", "note", "confidence"})
    if extra:
        raise SpecError(label, f"unknown key '{extra[0]}' (a figure has value, unit, source, note, confidence)",
                        where, key)
    value, unit = raw.get("value"), raw.get("unit")
    if "value" not in raw:
        raise SpecError(label, "missing value", where, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(label, f"value {value!r} is not a number", where, key)
    if value <= 0:
        raise SpecError(label, f"value {value!r} must be a positive number", where, key)
    if unit is None:
        raise SpecError(label, f"missing unit (allowed for {key}: {', '.join(units)})", where, key)
    if unit not in UNITS:
        raise SpecError(label, f"unknown unit '{unit}' (known: {', '.join(UNITS)})", where, key)
    if unit not in units:
        raise SpecError(label, f"unit '{unit}' does not fit {key} (allowed: {', '.join(units)})", where, key)
    if unit in WHOLE_UNITS and value != int(value):
        raise SpecError(label, f"value {value!r} must be a whole number of {unit}", where, key)
    source, refs = _source(label, where, key, raw.get("source"), sources)
    note, confidence = _meta(label, where, key, raw, default)
    return Figure(key, float(value), unit, source, note, confidence, origin, refs)


def _text_field(label, origin, where, key, raw, sources, default) -> TextField:
    if not isinstance(raw, dict):
        raise SpecError(label, 'a text field is a table: { value = "...", source = "S1" }', where, key)
    extra = sorted(set(raw) - {"value", "source", "note", "confidence"})
    if extra:
        raise SpecError(label, f"unknown key '{extra[0]}' (a text field has value, source, note, confidence)",
                        where, key)
    value = raw.get("value")
    if not isinstance(value, str) or not value.strip():
        raise SpecError(label, "value must be a non-empty string", where, key)
    source, refs = _source(label, where, key, raw.get("source"), sources)
    note, confidence = _meta(label, where, key, raw, default)
    return TextField(key, value.strip(), source, note, confidence, origin, refs)


def _strings(label, where, key, raw) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(s, str) and s.strip() for s in raw):
        raise SpecError(label, "must be a list of non-empty strings", where, key)
    return [s.strip() for s in raw]


def _entry(label: str, origin: str, raw: dict, index: int, sources: dict, default: str) -> Entry:
    name = raw.get("name")
    where = f"entry '{name.strip()}'" if isinstance(name, str) and name.strip() else f"entry #{index + 1}"
    if not isinstance(name, str) or not name.strip():
        raise SpecError(label, "missing name (a non-empty string)", where, "name")
    for key in raw:
        if key not in ENTRY_KEYS and key not in TEXT_KEYS and key not in FIGURES:
            close = difflib.get_close_matches(key, [*ENTRY_KEYS, *TEXT_KEYS, *FIGURES], n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise SpecError(label, f"unknown field{hint} (figures: see the top of bench/core/specs.py)", where, key)
    pci = _strings(label, where, "pci_device_ids", raw.get("pci_device_ids"))
    for p in pci:
        if not _PCI_ID.fullmatch(p):
            raise SpecError(label, f"'{p}' is not a PCI device id like \"0x2330\"", where, "pci_device_ids")
    note = raw.get("note", "")
    if not isinstance(note, str):
        raise SpecError(label, "note must be a string", where, "note")
    text_fields = {k: _text_field(label, origin, where, k, raw[k], sources, default) for k in TEXT_KEYS if k in raw}
    return Entry(name=name.strip(), nvml_names=_strings(label, where, "nvml_names", raw.get("nvml_names")),
                 pci_device_ids=[f"0x{p[2:].upper()}" for p in pci],
                 aliases=_strings(label, where, "aliases", raw.get("aliases")),
                 text={k: t.value for k, t in text_fields.items()},
                 figures={k: _figure(label, origin, where, k, raw[k], sources, default) for k in FIGURES if k in raw},
                 origin=origin, note=note.strip(), text_fields=text_fields)


def _nvlink(label, origin, raw, sources, default) -> NvlinkGeneration:
    gen, links = raw.get("generation"), raw.get("links")
    where = f"[[nvlink]] generation {gen}"
    extra = sorted(set(raw) - {"generation", "gpus", "links", "per_direction"})
    if extra:
        raise SpecError(label, f"unknown key '{extra[0]}'", where, extra[0])
    for key, v in (("generation", gen), ("links", links)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise SpecError(label, "must be a positive whole number", where, key)
    per_direction = _figure(label, origin, where, "nvlink_per_direction", raw.get("per_direction"), sources, default)
    return NvlinkGeneration(gen, str(raw.get("gpus", "")), links, per_direction)


def _add_entries(db: SpecDB, new: list[Entry], label: str) -> None:
    """Add one file's entries to `db`: a known name merges into its entry, any other name adds one."""
    seen: dict[str, str] = {}
    for e in new:
        if e.name.casefold() in seen:
            raise SpecError(label, f"duplicate entry name (also entry '{seen[e.name.casefold()]}' of this file)",
                            f"entry '{e.name}'", "name")
        seen[e.name.casefold()] = e.name
    touched: dict[int, str] = {}  # entries this file added or changed -> the name it used
    for e in new:
        target = db.find(e.name)
        if target is None:
            _check_claims(db, e, e, label)
            db.entries.append(e)
            touched[id(e)] = e.name
            _check_entry(e, label)
            continue
        if id(target) in touched:
            raise SpecError(label, f"names entry '{target.name}', which entry '{touched[id(target)]}' of this "
                            "file already defines or changes", f"entry '{e.name}'", "name")
        touched[id(target)] = e.name
        _check_claims(db, e, target, label)
        target.aliases += [a for a in e.aliases if a not in target.aliases]
        target.nvml_names += [n for n in e.nvml_names if n not in target.nvml_names]
        target.pci_device_ids += [p for p in e.pci_device_ids if p not in target.pci_device_ids]
        target.figures.update(e.figures)
        target.text_fields.update(e.text_fields)
        target.text.update(e.text)
        target.note = e.note or target.note
        target.origin = e.origin
        _check_entry(target, label)


def _check_claims(db: SpecDB, new: Entry, target: Entry, label: str) -> None:
    """No name, alias or NVML name of `new` may belong to an entry other than `target`."""
    for key, values in (("name", [new.name]), ("aliases", new.aliases), ("nvml_names", new.nvml_names)):
        for v in values:
            other = db.find(v)
            if other is not None and other is not target:
                raise SpecError(label, f"'{v}' already names entry '{other.name}'", f"entry '{new.name}'", key)


def _check_entry(e: Entry, label: str) -> None:
    """Rules across figures: dense <= sparse, and the two NVLink figures agree."""
    for t in TENSOR_TYPES:
        dense, sparse = e.figures.get(f"{t}_dense"), e.figures.get(f"{t}_sparse")
        if dense and sparse and sparse.value < dense.value:  # same unit: FIGURES allows one per type
            blamed = dense if dense.origin == e.origin != sparse.origin else sparse  # the one this file set
            raise SpecError(label, f"{t}_sparse {sparse.value:g} {sparse.unit} (with sparsity) is below "
                            f"{t}_dense {dense.value:g} {dense.unit}", f"entry '{e.name}'", blamed.key)
    bidir, per_dir = e.figures.get("nvlink_bidir"), e.figures.get("nvlink_per_direction")
    if bidir and per_dir and abs(_bytes_per_s(bidir) - 2 * _bytes_per_s(per_dir)) > 0.01 * _bytes_per_s(bidir):
        raise SpecError(label, f"{per_dir.value:g} {per_dir.unit} per direction is not half of nvlink_bidir "
                        f"{bidir.value:g} {bidir.unit}", f"entry '{e.name}'", "nvlink_per_direction")


# ---------------------------------------------------------------- normalization

_DTYPE_FIGURE = {
    "fp32": "fp32", "float32": "fp32", "tf32": "tf32_dense", "bf16": "bf16_dense", "bfloat16": "bf16_dense",
    "fp16": "fp16_dense", "float16": "fp16_dense", "fp16_acc16": "fp16_acc16_dense",
    "fp8": "fp8_dense", "e4m3": "fp8_dense", "fp8_e4m3": "fp8_dense", "float8_e4m3fn": "fp8_dense",
    "e5m2": "fp8_dense", "fp8_e5m2": "fp8_dense", "fp8_acc16": "fp8_acc16_dense",
    "fp6": "fp6_dense", "mxfp6": "fp6_dense",
    "fp4": "fp4_dense", "mxfp4": "fp4_dense", "nvfp4": "fp4_dense", "e2m1": "fp4_dense",
    "int8": "int8_dense",
    "fp64": "fp64_tensor",  # cuBLAS DGEMM runs on the FP64 tensor cores where a card has them
}


def claim_key(family: str, benchmark: str, dtype: str) -> str | None:
    """The figure a measurement is normalized against: never a with-sparsity one.

    memory/* -> memory_bandwidth; matmul/*/<dtype> -> that dtype's dense figure (fp32 -> the
    non-tensor fp32, fp64 -> fp64_tensor, fp16_acc16 -> fp16_acc16_dense); transfer and
    collective -> None (they are compared with the link: pcie_bytes_per_s, nvlink_*).
    """
    if family == "memory":
        return "memory_bandwidth"
    if family == "matmul":
        return _DTYPE_FIGURE.get((dtype or "").strip().lower())
    return None


def columns_for(row: dict, entry: Entry | None) -> dict[str, object]:
    """The normalization columns to write onto a row.

    All of them where the database holds the row's claim (memory, matmul). Where a
    family normalizes against something else (transfers and collectives against the
    link), its own figures stay and only the matched entry's name is filled in.
    A row measured on a MIG slice that no entry names also gets the reason in `message`.
    """
    if claim_key(str(row.get("family", "")), str(row.get("benchmark", "")), str(row.get("dtype", ""))) is None:
        return {} if row.get("spec_entry") or entry is None else {"spec_entry": entry.name}
    out = normalize(row, entry)
    message = str(row.get("message") or "")
    if entry is None and mig_slice(str(row.get("device_name") or "")) and MIG_NO_ENTRY not in message:
        out["message"] = f"{message}; {MIG_NO_ENTRY}" if message else MIG_NO_ENTRY
    return out


def mig_slice(nvml_name: str) -> bool:
    """Whether NVML's device name is a MIG slice ("NVIDIA H200 MIG 1g.18gb"), not a whole card."""
    return bool(_MIG_SLICE.search(nvml_name or ""))


def claim_figure(row: dict, db: SpecDB) -> Figure | None:
    """The figure `db` holds for the claim a results row was normalized against (its
    spec_entry and spec_figure columns); None when the row has none or `db` lacks it."""
    entry = db.find(str(row.get("spec_entry") or "")) if row.get("spec_entry") else None
    return entry.figures.get(str(row.get("spec_figure") or "")) if entry else None


def unconfirmed_derived(fig: Figure | None) -> bool:
    """A claim no vendor document prints and no user file confirms: not a pass/fail bar."""
    return fig is not None and fig.confidence == "derived" and fig.origin == "shipped"


def _float(text) -> float | None:
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _convert(value: float, unit: str, to: str, key: str) -> float | None:
    """`value` in `unit` expressed in `to`; None when they measure different things."""
    a, b = _RATES.get(unit), _RATES.get(to)
    if a is None or b is None:
        return value if unit == to else None
    same = a[0] == b[0] or (key.startswith("int8") and {a[0], b[0]} == {"flop", "ops"})
    return value * a[1] / b[1] if same else None


def _bytes_per_s(f: Figure) -> float:
    return _convert(f.value, f.unit, "B/s", f.key)


def normalize(row: dict, entry: Entry | None) -> dict[str, object]:
    """The normalization columns of one results row (keys NORMALIZE_KEYS; "" where not applicable).

    spec_entry: the matched entry (even when it has no figure for this row); spec_figure,
    spec_value (in the row's unit), spec_unit, spec_source: the claimed counterpart;
    pct_of_spec: 100 x value / spec_value; derived_peak: the memory peak derived from NVML
    (mem_peak_bytes_per_s, in the row's unit), pct_of_derived. Percentages only for `ok` rows.
    A spec figure whose unit cannot be converted to the row's unit is left out.
    """
    out: dict[str, object] = dict.fromkeys(NORMALIZE_KEYS, "")
    unit = str(row.get("unit") or "")
    value = _float(row.get("value")) if str(row.get("status", "")) == "ok" else None
    if entry is not None:
        out["spec_entry"] = entry.name
        key = claim_key(str(row.get("family", "")), str(row.get("benchmark", "")), str(row.get("dtype", "")))
        fig = entry.figures.get(key) if key else None
        spec = _convert(fig.value, fig.unit, unit or fig.unit, key) if fig else None
        if spec is not None:
            out.update(spec_figure=key, spec_value=spec, spec_unit=unit or fig.unit, spec_source=fig.source)
            if value is not None:
                out["pct_of_spec"] = 100.0 * value / spec
    peak = _float(row.get("mem_peak_bytes_per_s"))
    if row.get("family") == "memory" and peak and peak > 0:
        derived = _convert(peak, "B/s", unit or "GB/s", "memory_bandwidth")
        if derived is not None:
            out["derived_peak"] = derived
            if value is not None:
                out["pct_of_derived"] = 100.0 * value / derived
    return out


def cross_check(entry: Entry | None, identity: dict[str, str]) -> str | None:
    """A warning when what NVML reports disagrees with the entry; None when it agrees or cannot tell.

    Memory bandwidth: the peak derived from NVML (max memory clock x bus width x 2) against the
    spec, more than 5% apart (recent B200 drivers report a 7680-bit bus where older ones
    reported 8192, https://github.com/pytorch/ao/issues/4002).
    Memory size: NVML's total more than 10% from the spec's GB read as 1e9 and as 2^30 bytes
    (sheets mix the two, and drivers keep some back): a sign the card matched the wrong entry.
    """
    if entry is None:
        return None
    found = []
    spec, derived = entry.figures.get("memory_bandwidth"), _float(identity.get("mem_peak_bytes_per_s"))
    if spec and derived and derived > 0:
        diff = derived / _bytes_per_s(spec) - 1
        if abs(diff) > 0.05:
            how = ""
            if identity.get("mem_clock_max_mhz") and identity.get("mem_bus_width_bits"):
                how = f" (max memory clock {identity['mem_clock_max_mhz']} MHz x {identity['mem_bus_width_bits']}-bit x 2)"
            found.append(f"memory bandwidth: the peak derived from NVML, {derived / 1e9:.1f} GB/s{how}, is "
                         f"{abs(diff):.1%} {'above' if diff > 0 else 'below'} the spec's {spec.value:g} {spec.unit} "
                         f"(entry '{entry.name}')")
    size, total = entry.figures.get("memory_size_gb"), _float(identity.get("memory_total_bytes"))
    if size and total and total > 0:
        off = min(abs(total / (size.value * 1e9) - 1), abs(total / (size.value * 2**30) - 1))
        if off > 0.10:
            found.append(f"memory size: NVML reports {total / 1e9:.1f} GB, the spec {size.value:g} GB "
                         f"(entry '{entry.name}'): is this the right entry?")
    return "; ".join(found) or None


def pci_device(pci_device_id: str) -> int | None:
    """The device part of a PCI id: NVML's "0x233010DE" (device << 16 | vendor) or a plain "0x2330"."""
    try:
        value = int(str(pci_device_id).strip(), 16)
    except ValueError:
        return None
    if value > 0xFFFF:
        return value >> 16 if value & 0xFFFF == NVIDIA_VENDOR_ID else None
    return value


def _toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def unknown_card_message(name: str, pci_device_id: str = "") -> str:
    """What to tell the user when no entry matches: why the columns are empty, and a file to start from."""
    name = name.strip() or "my card"
    device = pci_device(pci_device_id) if pci_device_id else None
    if mig_slice(name):  # its PCI id is the whole card's: a slice entry must not list it
        lines = [
            f"{MIG_NO_ENTRY}: {name!r} has a share of its card's SMs and memory, so the card's peak figures",
            "do not apply to it and the spec columns (spec_value, pct_of_spec) stay empty. To normalize",
            "against the slice, save the lines below to a file with the slice's own figures and pass --specs FILE.",
        ]
        device = None
    else:
        pci = f" (PCI device 0x{device:04X})" if device is not None else ""
        lines = [
            f"no spec entry for {name!r}{pci}: the run works, the spec columns (spec_value, pct_of_spec) stay empty.",
            "To add the card, save the lines below to a file, fill in the figures from the vendor's datasheet",
            "(dense tensor figures, not the with-sparsity ones), and pass it with --specs FILE.",
        ]
    lines += [
        "`cardbench specs NAME` shows a similar card's entry; bench/core/specs.py lists every figure key.",
        "",
        "[sources]",
        'MY1 = "vendor datasheet: title and URL"',
        "",
        "[[gpu]]",
        f"name = {_toml_str(name)}",
        f"nvml_names = [{_toml_str(name)}]",
    ]
    if device is not None:
        lines.append(f'pci_device_ids = ["0x{device:04X}"]')
    lines += [
        '# memory_bandwidth = { value = 0, unit = "GB/s", source = "MY1" }',
        '# bf16_dense = { value = 0, unit = "TFLOP/s", source = "MY1" }',
        '# fp16_dense = { value = 0, unit = "TFLOP/s", source = "MY1" }',
        '# fp8_dense = { value = 0, unit = "TFLOP/s", source = "MY1" }',
        '# fp32 = { value = 0, unit = "TFLOP/s", source = "MY1" }',
        '# pcie_gen = { value = 0, unit = "gen", source = "MY1" }',
        '# pcie_lanes = { value = 0, unit = "lanes", source = "MY1" }',
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- link theory

# PCIe: GT/s per lane and the share of line bits that carry data. Gen1-2: 8b/10b; Gen3-5:
# 128b/130b. Gen6 (PAM4, FLIT mode) has no 128b/130b: each 256-byte flit carries 236 bytes of
# TLP + 6 of DLLP, the rest is CRC and FEC, so 242/256 -> 121 GB/s for x16 (the PCIe table of
# https://github.com/stas00/ml-engineering/blob/744d01e/network/README.md).
_PCIE = {1: (2.5e9, 8 / 10), 2: (5e9, 8 / 10), 3: (8e9, 128 / 130), 4: (16e9, 128 / 130),
         5: (32e9, 128 / 130), 6: (64e9, 242 / 256)}


def pcie_bytes_per_s(gen: int, lanes: int) -> float:
    """Theoretical PCIe bandwidth per direction after line encoding (Gen5 x16: 63.0e9 B/s).

    Vendors' "128 GB/s" for Gen5 x16 is both directions before encoding.
    """
    if gen not in _PCIE:
        raise ValueError(f"PCIe generation {gen!r}: known are {', '.join(map(str, _PCIE))}")
    if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes <= 0:
        raise ValueError(f"PCIe lanes {lanes!r}: a positive whole number")
    transfers, efficiency = _PCIE[gen]
    return transfers * lanes / 8 * efficiency


def nvlink_per_direction_bytes_per_s(entry: Entry | None) -> float | None:
    """NVLink per GPU, one direction: the entry's figure, else half its bidirectional figure."""
    if entry is None:
        return None
    if "nvlink_per_direction" in entry.figures:
        return _bytes_per_s(entry.figures["nvlink_per_direction"])
    if "nvlink_bidir" in entry.figures:
        return _bytes_per_s(entry.figures["nvlink_bidir"]) / 2
    return None


def nvlink_link_bytes_per_s(generation: int, db: SpecDB | None = None) -> float | None:
    """One NVLink link of `generation`, one direction (for a link count NVML reports)."""
    g = (db or load()).nvlink.get(generation)
    return _bytes_per_s(g.per_direction) / g.links if g else None


# ---------------------------------------------------------------- `cardbench specs`

def add_arguments(parser) -> None:
    parser.add_argument("name", nargs="?", metavar="NAME",
                        help="entry name, alias or NVML name (case-insensitive); without it, list the entries")
    parser.add_argument("--json", action="store_true", help="print JSON (keys documented in bench/core/specs.py)")
    parser.add_argument("--specs", metavar="FILE", help="TOML file of entries that add to or change the shipped ones")


def entry_json(e: Entry) -> dict:
    """An entry as JSON. Keys: name, origin, nvml_names, pci_device_ids, aliases, note,
    text {key: {value, source, source_keys, note, confidence, origin}},
    figures {key: {value, unit, sparsity ("dense" / "sparse" / ""), source, source_keys, note,
    confidence, origin}}; figures in vocabulary order."""
    def refs(x):
        return [k for k, _ in x.source_refs]
    return {
        "name": e.name, "origin": e.origin, "nvml_names": e.nvml_names, "pci_device_ids": e.pci_device_ids,
        "aliases": e.aliases, "note": e.note,
        "text": {k: {"value": t.value, "source": t.source, "source_keys": refs(t), "note": t.note,
                     "confidence": t.confidence, "origin": t.origin}
                 for k in TEXT_KEYS if (t := e.text_fields.get(k))},
        "figures": {k: {"value": f.value, "unit": f.unit, "sparsity": f.sparsity, "source": f.source,
                        "source_keys": refs(f), "note": f.note, "confidence": f.confidence, "origin": f.origin}
                    for k in FIGURES if (f := e.figures.get(k))},
    }


def _cell(e: Entry, key: str) -> str:
    f = e.figures.get(key)
    return f"{f.value:g}" if f else ""


def _list_table(db: SpecDB) -> str:
    from tabulate import tabulate

    rows = []
    for e in db.entries:
        size, bw = e.figures.get("memory_size_gb"), e.figures.get("memory_bandwidth")
        memory = " ".join(p for p in (f"{size.value:g} GB" if size else "", e.text.get("memory_type", "")) if p)
        rows.append([e.name, e.text.get("chip", ""), memory, f"{bw.value:g} {bw.unit}" if bw else "",
                     _cell(e, "bf16_dense"), _cell(e, "fp8_dense"), _cell(e, "fp4_dense"), ", ".join(e.nvml_names)])
    head = ["name", "chip", "memory", "bandwidth", "bf16 dense", "fp8 dense", "fp4 dense", "NVML names"]
    return (tabulate(rows, head, disable_numparse=True)
            + "\ntensor figures in TFLOP/s, dense (no sparsity); blank: not in the database."
            + "\n`cardbench specs NAME` shows every figure of one entry with its source.")


def _show(e: Entry) -> str:
    from tabulate import tabulate

    refs: dict[tuple[str, str], None] = {}
    lines = [f"{e.name}  ({'shipped' if e.origin == 'shipped' else 'from ' + e.origin})",
             f"NVML names: {', '.join(e.nvml_names) or '-'}",
             f"PCI device ids: {', '.join(e.pci_device_ids) or '-'}",
             f"aliases: {', '.join(e.aliases) or '-'}"]
    if e.note:
        lines.append(f"note: {e.note}")
    rows = []
    for k in TEXT_KEYS:
        if t := e.text_fields.get(k):
            refs.update(dict.fromkeys(t.source_refs))
            rows.append([k, t.value, "", "", t.confidence, ", ".join(r[0] for r in t.source_refs), t.note])
    for k, f in ((k, e.figures[k]) for k in FIGURES if k in e.figures):
        refs.update(dict.fromkeys(f.source_refs))
        rows.append([k, f"{f.value:g}", f.unit, f.sparsity, f.confidence, ", ".join(r[0] for r in f.source_refs),
                     f.note])
    head = ["field", "value", "unit", "dense/sparse", "confidence", "source", "note"]
    lines += ["", tabulate(rows, head, disable_numparse=True, maxcolwidths=[None] * 6 + [70]), "", "sources:"]
    lines += [f"  {k}: {text}" for k, text in refs]
    return "\n".join(lines)


def specs_main(args) -> int:
    """`cardbench specs [NAME] [--json] [--specs FILE]`; exit 0, or 2 for an unknown NAME or a broken file.

    --json without NAME prints {"entries": [entry, ...]}; with NAME, the entry itself (see entry_json).
    """
    try:
        db = load(args.specs)
    except SpecError as e:
        print(f"cardbench specs: {e}", file=sys.stderr)
        return 2
    if not args.name:
        print(json.dumps({"entries": [entry_json(e) for e in db.entries]}, indent=1, ensure_ascii=False)
              if args.json else _list_table(db))
        return 0
    entry = db.find(args.name)
    if entry is None:
        close = db.close_names(args.name)
        hint = f"; close: {', '.join(close)}" if close else ""
        print(f"cardbench specs: no entry named {args.name!r}{hint}. `cardbench specs` lists them all.",
              file=sys.stderr)
        return 2
    print(json.dumps(entry_json(entry), indent=1, ensure_ascii=False) if args.json else _show(entry))
    return 0
