"""`cardbench size MODEL`: will a model fit on these cards, and how fast can it train and serve there.

MODEL is a shipped config (bench/commands/models.toml) or a Hugging Face config.json. Per card (--card
NAME..., or the cards in --results): fine-tuning memory per GPU and the verdict, a step-time
lower bound, inference capacity and decode / prefill bounds, a DeepSpeed config and FSDP
settings. The arithmetic is bench/core/sizing.py; the inputs (measured or claimed) bench/commands/size_inputs.py.
Exit 0, or 2 for bad input (unknown model or card, a config missing keys, a broken file).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from importlib import resources
from pathlib import Path

from ..core import sizing, sizing_config, specs
from .size_inputs import Card, Value, card_inputs, group_results

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

DTYPE_LABEL = {"bf16": "bf16", "fp8": "fp8 (e4m3)", "fp4": "fp4 (NVFP4)"}


class UsageError(ValueError):
    """Bad input: printed as one message, exit 2."""


def _context(text: str) -> int:
    try:
        return sizing.parse_context(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..core.options import positive_int as _positive_int

    names = ", ".join(m["name"] for m in shipped_models())
    p.add_argument("model", metavar="MODEL", help=f"a shipped model ({names}) or a Hugging Face config.json path")
    p.add_argument("--card", action="append", default=[], metavar="NAME",
                   help="spec entry name or alias (`cardbench specs` lists them); repeat for side by side")
    p.add_argument("--gpus", type=_positive_int, default=8, help="GPUs per card type (default 8: one node)")
    p.add_argument("--results", action="append", default=[], metavar="FILE",
                   help="results CSV: its measurements replace the claims (without --card: its cards)")
    p.add_argument("--train", choices=("full", "lora"), default="full", help="full fine-tune or LoRA (default full)")
    p.add_argument("--lora-rank", type=_positive_int, default=16, metavar="R", help="LoRA rank (default 16)")
    p.add_argument("--zero", type=int, choices=(0, 1, 2, 3), default=3, help="ZeRO stage (FSDP FULL_SHARD = 3)")
    p.add_argument("--offload", choices=("none", "optimizer", "params"), default="none",
                   help="CPU offload: optimizer states (ZeRO-Offload) or also parameters (ZeRO-3 only)")
    p.add_argument("--context", type=_context, default=4096, metavar="TOKENS",
                   help="sequence length for training and context for inference: 4096, 32k (k = 1024)")
    p.add_argument("--batch", type=_positive_int, default=1, metavar="B", help="training micro-batch per GPU")
    p.add_argument("--dtype", choices=tuple(sizing.WEIGHT_BYTES), default="bf16", help="inference weights")
    p.add_argument("--deepspeed-config", metavar="FILE", help="write the DeepSpeed JSON config to FILE")
    p.add_argument("--specs", metavar="FILE", help="TOML spec entries that add to or override the shipped ones")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")


def shipped_models() -> list[dict]:
    return tomllib.loads(resources.files(__package__).joinpath("models.toml").read_text("utf-8"))["model"]


def load_model(text: str) -> tuple[sizing.ModelConfig, dict]:
    """A shipped model by name or alias (case-insensitive), or a config.json file; raises UsageError."""
    want = text.strip().casefold()
    for info in shipped_models():
        if want in {n.casefold() for n in (info["name"], info["title"], *info.get("aliases", []))}:
            return sizing.model_from_config(info["title"], info["config"]), info
    path = Path(text)
    if not path.is_file():
        known = ", ".join(m["name"] for m in shipped_models())
        raise UsageError(f"{text!r} is neither a shipped model ({known}) nor a config.json file")
    try:
        cfg = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{path}: not a readable JSON config: {e}") from None
    try:
        return sizing.model_from_config(path.name, cfg), {"title": str(path), "config_source": str(path)}
    except sizing.ConfigError as e:
        raise UsageError(f"{path}: {e}") from None


def _cards(args, db: specs.SpecDB) -> list[Card]:
    from ..core.results import ResultsFileError, read_results

    try:
        groups = group_results(db, [read_results(f) for f in args.results])
    except ResultsFileError as e:
        raise UsageError(str(e)) from None
    if not args.card:
        if not groups:
            raise UsageError("name a card with --card NAME, or give --results FILE with measurements")
        return [card_inputs(name, entry, rows, args.gpus) for name, (entry, rows) in groups.items()]
    cards = []
    for name in args.card:
        entry = db.find(name)
        if entry is None:
            close = db.close_names(name)
            raise UsageError(f"no spec entry named {name!r}" + (f"; close: {', '.join(close)}" if close else "")
                             + ". `cardbench specs` lists them all")
        cards.append(card_inputs(entry.name, entry, groups.get(entry.name, (None, []))[1], args.gpus))
    return cards


def _value(v: Value) -> dict:
    return {"value": v.value, "origin": v.origin, "source": v.source}


def card_report(model: sizing.ModelConfig, p: sizing.Params, setup: sizing.TrainSetup, card: Card,
                dtype: str) -> dict:
    """The numbers of one card (JSON-ready; bytes, seconds, bytes/s, FLOP/s)."""
    out = {"name": card.name, "notes": card.notes,
           "inputs": {"memory": _value(card.memory), "memory_bandwidth": _value(card.bandwidth),
                      **{f"matmul_{d}": _value(v) for d, v in card.matmul.items()},
                      **{f"busbw_{op}": _value(v) for op, v in card.collectives.items()},
                      "host_link": _value(card.host_link)}}
    memory = card.memory.value
    plain = sizing.train_memory(model, p, setup)
    ckpt_setup = sizing.TrainSetup(**{**asdict(setup), "checkpointing": True})
    ckpt = sizing.train_memory(model, p, ckpt_setup)
    usable = sizing.usable_bytes(memory) if memory else None
    chosen, mem = (setup, plain) if usable and plain.total <= usable else (ckpt_setup, ckpt)
    out["training"] = {
        "checkpointing": chosen.checkpointing, "memory": asdict(mem), "total_no_checkpointing": plain.total,
        "total_full_checkpointing": ckpt.total, "activations_no_checkpointing": plain.activations,
        "activations_full_checkpointing": ckpt.activations, "usable": usable,
        "fits": None if usable is None else mem.total <= usable,
        "headroom": None if usable is None else usable - mem.total,
        "smallest_gpus": sizing.smallest_train_gpus(model, p, setup, memory) if memory else None}
    rate = card.matmul["bf16"].value
    busbw = {op: v.value for op, v in card.collectives.items()}
    if rate and (setup.gpus == 1 or all(busbw[op] for op, _, _ in sizing.traffic(p, setup, 1))):
        step = sizing.step_time(p, chosen, mem.trainable, rate, busbw, card.host_link.value)
        out["step"] = {**asdict(step), "tokens_per_gpu": chosen.seq * chosen.batch,
                       "comm": [dict(zip(("collective", "what", "bytes", "seconds"), c)) for c in step.comm]}
    else:
        out["step"] = None
    dtype_rate = card.matmul[dtype]
    out["inference"] = {"dtype": dtype, "supported": dtype != "fp4" or card.fp4_cores,
                        "weight_bytes_by_dtype": {d: sizing.WEIGHT_BYTES[d] * p.total for d in sizing.WEIGHT_BYTES},
                        "fp4_cores": card.fp4_cores}
    if out["inference"]["supported"] and memory and card.bandwidth.value:
        inf = sizing.inference(model, p, dtype, setup.seq, setup.gpus, memory, card.bandwidth.value, dtype_rate.value)
        out["inference"].update(asdict(inf))
    return out


def build(args) -> dict:
    """The whole answer as a JSON-ready dict; raises UsageError for bad input."""
    model, info = load_model(args.model)
    try:
        db = specs.load(args.specs)
    except specs.SpecError as e:
        raise UsageError(str(e)) from None
    setup = sizing.TrainSetup(args.train, args.lora_rank, args.zero, args.offload, args.gpus, args.context, args.batch)
    why = sizing.check_setup(setup)
    if why:
        raise UsageError(why)
    p = sizing.params(model)
    inputs = _cards(args, db)
    cards = [card_report(model, p, setup, c, args.dtype) for c in inputs]
    chosen = sizing.TrainSetup(**{**asdict(setup), "checkpointing": any(c["training"]["checkpointing"] for c in cards)})
    fsdp, fsdp_notes = sizing_config.fsdp_settings(model, chosen)
    refs = {k: doc for c in inputs for v in (c.memory, c.bandwidth, c.host_link, *c.matmul.values(),
                                             *c.collectives.values()) for k, doc in v.refs}
    return {"model": {"title": info.get("title", model.name), "config_source": info.get("config_source", ""),
                      "published_params": info.get("published_params"),
                      "published_source": info.get("published_source"),
                      "config": asdict(model), "params": asdict(p),
                      "lora_params": sizing.lora_params(model, args.lora_rank) if args.train == "lora" else None},
            "setup": {**asdict(setup), "dtype": args.dtype, "reserve_fraction": sizing.RESERVE_FRACTION,
                      "collectives": list(dict.fromkeys(op for op, _, _ in sizing.traffic(p, setup, 1)))},
            "cards": cards, "deepspeed_config": sizing_config.deepspeed_config(model, chosen),
            "fsdp": fsdp, "fsdp_notes": fsdp_notes, "sources": refs}


def main(args) -> int:
    """`cardbench size`: print the tables (or --json); write --deepspeed-config FILE; exit 0, 2 on bad input."""
    try:
        report = build(args)
        if args.deepspeed_config:
            try:
                Path(args.deepspeed_config).write_text(json.dumps(report["deepspeed_config"], indent=2) + "\n")
            except OSError as e:
                raise UsageError(f"cannot write {args.deepspeed_config}: {e.strerror or e}") from None
    except UsageError as e:
        print(f"cardbench size: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        from .size_text import render

        print(render(report, args.deepspeed_config))
    return 0
