"""Spec-sheet database: what each card's vendor claims, with sources (bench/core/normalize.py compares rows with it).

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
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path


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
    from . import specs_file

    sources, default, gpus, nvlinks = specs_file.parse_file(label, data, inherited)
    new = [specs_file.entry(label, origin, g, i, sources, default) for i, g in enumerate(gpus)]
    specs_file.add_entries(db, new, label)
    for raw in nvlinks:
        g = specs_file.nvlink(label, origin, raw, sources, default)
        db.nvlink[g.generation] = g
    return sources


# ---------------------------------------------------------------- figures and units

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


def finite_float(text) -> float | None:
    """A finite number from text (a CSV cell, an NVML reading), or None."""
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def convert(value: float, unit: str, to: str, key: str) -> float | None:
    """`value` in `unit` expressed in `to`; None when they measure different things."""
    a, b = _RATES.get(unit), _RATES.get(to)
    if a is None or b is None:
        return value if unit == to else None
    same = a[0] == b[0] or (key.startswith("int8") and {a[0], b[0]} == {"flop", "ops"})
    return value * a[1] / b[1] if same else None


def figure_bytes_per_s(f: Figure) -> float:
    return convert(f.value, f.unit, "B/s", f.key)


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
    spec, derived = entry.figures.get("memory_bandwidth"), finite_float(identity.get("mem_peak_bytes_per_s"))
    if spec and derived and derived > 0:
        diff = derived / figure_bytes_per_s(spec) - 1
        if abs(diff) > 0.05:
            how = ""
            if identity.get("mem_clock_max_mhz") and identity.get("mem_bus_width_bits"):
                how = f" (max memory clock {identity['mem_clock_max_mhz']} MHz x {identity['mem_bus_width_bits']}-bit x 2)"
            found.append(f"memory bandwidth: the peak derived from NVML, {derived / 1e9:.1f} GB/s{how}, is "
                         f"{abs(diff):.1%} {'above' if diff > 0 else 'below'} the spec's {spec.value:g} {spec.unit} "
                         f"(entry '{entry.name}')")
    size, total = entry.figures.get("memory_size_gb"), finite_float(identity.get("memory_total_bytes"))
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


