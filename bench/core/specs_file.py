"""Reading and validating a spec file (bench/core/specs.toml or a user's `--specs FILE`).

Every problem is a SpecError naming the file, the entry and the field: a broken file stops a
run before anything is measured.
"""
from __future__ import annotations

import difflib
import math

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from .specs import (CONFIDENCES, ENTRY_KEYS, FIGURES, TENSOR_TYPES, TEXT_KEYS, UNITS, WHOLE_UNITS, _PCI_ID, Entry,
                    Figure, NvlinkGeneration, SpecDB, SpecError, TextField, figure_bytes_per_s)


def parse_file(label: str, data: bytes, inherited: dict[str, str]):
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


def entry(label: str, origin: str, raw: dict, index: int, sources: dict, default: str) -> Entry:
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


def nvlink(label, origin, raw, sources, default) -> NvlinkGeneration:
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


def add_entries(db: SpecDB, new: list[Entry], label: str) -> None:
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
    if bidir and per_dir and abs(figure_bytes_per_s(bidir) - 2 * figure_bytes_per_s(per_dir)) > 0.01 * figure_bytes_per_s(bidir):
        raise SpecError(label, f"{per_dir.value:g} {per_dir.unit} per direction is not half of nvlink_bidir "
                        f"{bidir.value:g} {bidir.unit}", f"entry '{e.name}'", "nvlink_per_direction")
