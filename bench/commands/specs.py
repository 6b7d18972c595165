"""`cardbench specs [NAME]`: the spec database's entries, every figure with its source."""
from __future__ import annotations

import json
import sys

from ..core.specs import FIGURES, TEXT_KEYS, Entry, SpecDB, SpecError, load


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


def main(args) -> int:
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
