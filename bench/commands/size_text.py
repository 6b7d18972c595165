"""The tables `cardbench size` prints, from the JSON-ready answer bench/commands/size.py builds.

Every row says how its number was made: a formula (the `how` column), a measurement (the
results file and rows) or a sourced claim (the spec figure and its source keys, listed in full
at the end).
"""
from __future__ import annotations

import textwrap

from tabulate import tabulate

from ..core import sizing

WRAP = 34  # characters per card column before a cell wraps
LINE = 110  # prose lines (header, notes, sources) wrap here


def _fill(text: str, indent: str = "  ") -> str:
    return textwrap.fill(text, LINE, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False)


def _gb(x) -> str:
    return "n/a" if x is None else f"{x / 1e9:,.1f} GB"


def _bps(x) -> str:
    return "n/a" if x is None else f"{x / 1e9:,.1f} GB/s"


def _flops(x) -> str:
    if x is None:
        return "n/a"
    return f"{x / 1e12:,.1f} TFLOP/s" if x >= 1e12 else f"{x / 1e9:,.1f} GFLOP/s"


def _s(x) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.2f} s" if x >= 1 else f"{x * 1e3:,.1f} ms"


def _rate(x) -> str:
    return "n/a" if x is None else f"{x:,.1f}"


def _input(v: dict, fmt) -> str:
    if v["value"] is None:
        return f"none: {v['source']}"
    return f"{fmt(v['value'])}, {v['origin']}: {v['source']}"


def _table(rows: list, head: list, widths: list[int]) -> str:
    """tabulate with each column's cells wrapped to its width (tabulate's own wrapping parses numbers)."""
    def wrap(row):
        return ["\n".join(textwrap.wrap(str(cell), w)) if w else str(cell) for cell, w in zip(row, widths)]
    return tabulate([wrap(r) for r in rows], wrap(head), disable_numparse=True)


def _widths(cards: int, how: bool = True) -> list[int]:
    return [36] + [WRAP] * cards + ([44] if how else [])


def _header(r: dict) -> list[str]:
    m, p, s = r["model"], r["model"]["params"], r["setup"]
    published = f"; published: {m['published_params']}, {m['published_source']}" if m.get("published_params") else ""
    moe = f", {p['active'] / 1e9:,.2f} billion active per token" if p["active"] != p["total"] else ""
    train = ("full fine-tune" if s["mode"] == "full" else f"LoRA rank {s['lora_rank']} on q, k, v, o, gate, up, down "
             f"({r['model']['lora_params'] / 1e6:,.1f} M trainable; base frozen in bf16)")
    return [
        f"{m['title']}: {p['total'] / 1e9:,.2f} billion parameters from its config{moe}{published}",
        f"  embeddings {p['embedding'] / 1e9:,.2f} B, attention {p['attention'] / 1e9:,.2f} B, MLP {p['mlp'] / 1e9:,.2f} B, "
        + (f"router {p['router'] / 1e6:,.2f} M, " if p["router"] else "")
        + f"norms {p['norms'] / 1e6:,.2f} M, head {p['head'] / 1e9:,.2f} B "
        f"(config: {m['config_source']})",
        f"setup: {train}, mixed-precision AdamW, ZeRO-{s['zero']} over {s['gpus']} GPUs of each card, offload "
        f"{s['offload']}, micro-batch {s['batch']} x {s['seq']:,} tokens per GPU, flash attention; inference "
        f"{s['dtype']} at {s['seq']:,} tokens of context, tensor parallel over {s['gpus']}",
    ]


def _inputs(r: dict) -> str:
    rows = [["memory per GPU"] + [_input(c["inputs"]["memory"], _gb) for c in r["cards"]],
            ["memory bandwidth"] + [_input(c["inputs"]["memory_bandwidth"], _bps) for c in r["cards"]]]
    for d in ("bf16", "fp8", "fp4"):
        rows.append([f"{d} dense matmul"] + [_input(c["inputs"][f"matmul_{d}"], _flops) for c in r["cards"]])
    for op in r["setup"]["collectives"]:
        rows.append([f"{op} busbw"] + [_input(c["inputs"][f"busbw_{op}"], _bps) for c in r["cards"]])
    if r["setup"]["offload"] != "none":
        rows.append(["host link (offload)"] + [_input(c["inputs"]["host_link"], _bps) for c in r["cards"]])
    return _table(rows, ["inputs"] + [c["name"] for c in r["cards"]], [24] + [WRAP + 14] * len(r["cards"]))


def _verdict(t: dict) -> str:
    if t["fits"] is None:
        return "unknown: no memory figure"
    how = "with full checkpointing" if t["checkpointing"] else "without checkpointing"
    if t["fits"]:
        return f"fits {how}, {_gb(t['headroom'])} headroom"
    return f"does not fit: {_gb(-t['headroom'])} short {how}"


def _training(r: dict) -> str:
    s, cards, n, z = r["setup"], r["cards"], r["setup"]["gpus"], r["setup"]["zero"]
    lora = s["mode"] == "lora"
    what = "adapters" if lora else "params"
    mem = [c["training"]["memory"] for c in cards]
    rows = [
        ["weights (bf16)"] + [_gb(m["weights"]) for m in mem]
        + [f"2 B x {'(base + adapters)' if lora else 'params'}" + (f" / {n} (ZeRO-3)" if z == 3 else "")
           + (", offloaded" if s["offload"] == "params" else "")],
        ["gradients (bf16)"] + [_gb(m["gradients"]) for m in mem]
        + [f"2 B x {what}" + (f" / {n} (ZeRO-2+)" if z >= 2 else "") + (", offloaded" if s["offload"] != "none" else "")],
        ["optimizer (fp32 master, m, v)"] + [_gb(m["optimizer"]) for m in mem]
        + [f"12 B x {what}" + (f" / {n} (ZeRO-1+)" if z >= 1 else "") + (", offloaded" if s["offload"] != "none" else "")],
        ["ZeRO-3 gathered modules"] + [_gb(m["gathered"]) for m in mem]
        + ["largest module (layer or embedding) x 2 B x 2 (in use + prefetched)" + ("" if lora else " + its bf16 grads")],
        ["activations, none recomputed"] + [_gb(c["training"]["activations_no_checkpointing"]) for c in cards]
        + ["layers x 34 s b h (Korthikanti 2022, flash attention)"],
        ["activations, full recompute"] + [_gb(c["training"]["activations_full_checkpointing"]) for c in cards]
        + ["layers x 2 s b h + one layer's 34 s b h"],
        ["total, none recomputed"] + [_gb(c["training"]["total_no_checkpointing"]) for c in cards] + [""],
        ["total, full recompute"] + [_gb(c["training"]["total_full_checkpointing"]) for c in cards] + [""],
        ["usable per GPU"] + [_gb(c["training"]["usable"]) for c in cards]
        + [f"{1 - r['setup']['reserve_fraction']:.0%} of memory (reserve: context, NCCL, fragmentation)"],
        ["verdict"] + [_verdict(c["training"]) for c in cards] + [""],
        ["smallest GPU count that fits"] + [str(c["training"]["smallest_gpus"] or "none") for c in cards]
        + [f"same ZeRO-{z} and offload, full recompute"],
    ]
    if s["offload"] != "none":
        rows.append(["host memory, whole node"] + [_gb(m["host"]) for m in mem]
                    + ["14 B x trainable (+ 2 B x weights with params)"])
    return _table(rows, ["fine-tuning memory per GPU"] + [c["name"] for c in cards] + ["how"], _widths(len(cards)))


def _step(r: dict) -> str:
    cards = r["cards"]
    steps = [c["step"] for c in cards]
    first = next((st for st in steps if st), None)
    if first is None:
        return "step time: no bf16 matmul rate or collective bandwidth for any card"

    def col(f):
        return [f(st) if st else "n/a" for st in steps]

    rows = [["tokens per GPU per step"] + col(lambda st: f"{st['tokens_per_gpu']:,}") + ["micro-batch x sequence"],
            ["compute"] + col(lambda st: f"{_s(st['compute_s'])} ({st['flops_factor']} x)")
            + ["k x active params x tokens / bf16 rate; k = 6, 8 with full recompute (LoRA: 4, 6)"]]
    for i, c in enumerate(first["comm"]):
        rows.append([f"{c['collective']}: {c['what']}"] + col(lambda st: _s(st["comm"][i]["seconds"]))
                    + [f"S {c['bytes'] / 1e9:,.1f} GB x (n-1)/n{' x 2' if c['collective'] == 'all_reduce' else ''}"
                       " / busbw"])
    if r["setup"]["offload"] != "none":
        rows.append(["host offload traffic"] + col(lambda st: _s(st["offload_s"])) + ["bytes per GPU / host link"])
    rows.append(["step, lower bound"] + col(lambda st: f"{_s(st['step_s'])} ({st['bound']})") + ["the largest part"])
    rows.append(["tokens/s per GPU, upper bound"] + col(lambda st: f"{st['tokens_per_gpu'] / st['step_s']:,.0f}") + [""])
    return _table(rows, ["step time"] + [c["name"] for c in cards] + ["how"], _widths(len(cards)))


def _inference(r: dict) -> str:
    cards, s = r["cards"], r["setup"]
    n, ctx, d = s["gpus"], s["seq"], s["dtype"]
    infs = [c["inference"] for c in cards]

    def col(f, why=False):
        return [f(i) if i.get("sequences") is not None else
                ("no FP4 tensor cores in the spec entry" if why and not i["supported"] else "-") for i in infs]

    wb = infs[0]["weight_bytes_by_dtype"]
    fp4 = [f"{_gb(wb['fp4'])}" + ("" if i["fp4_cores"] else " (no FP4 tensor cores)") for i in infs]
    rows = [["weights bf16 / fp8, whole model"] + [f"{_gb(wb['bf16'])} / {_gb(wb['fp8'])}"] * len(cards)
            + ["2 B, 1 B x params"],
            ["weights fp4 (NVFP4), whole model"] + fp4 + ["4.5 bits x params (16-value blocks, FP8 scale)"],
            [f"weights {d} per GPU"] + col(lambda i: _gb(i["weight_bytes_per_gpu"]), why=True) + [f"/ {n} (tensor parallel)"],
            ["KV cache per token, whole model"] + col(lambda i: f"{i['kv_bytes_per_token']:,.0f} B")
            + [f"2 x layers x KV heads x head_dim x {sizing.KV_BYTES[d]} B"],
            [f"KV per {ctx:,}-token sequence per GPU"]
            + col(lambda i: _gb(i["kv_bytes_per_token_per_gpu"] * ctx)) + ["KV heads split over the GPUs"],
            ["room for KV per GPU"] + col(lambda i: _gb(i["kv_budget_per_gpu"])) + ["usable - weights per GPU"],
            [f"concurrent {ctx:,}-token sequences"] + col(lambda i: f"{i['sequences']:,}") + ["room / KV per sequence"],
            ["decode tokens/s, one sequence"] + col(lambda i: _rate(i["decode_tps_one"]))
            + ["bandwidth / (active weights + its KV) per GPU"],
            ["decode tokens/s, all sequences"] + col(lambda i: _rate(i["decode_tps_total"]))
            + ["sequences x bandwidth / (all weights + all KV)"],
            [f"prefill of one {ctx:,}-token prompt"] + col(lambda i: _s(i["prefill_s"]))
            + [f"2 x active params x tokens / ({n} x {d} rate)"],
            ["smallest GPU count (one sequence)"] + col(lambda i: str(i["smallest_gpus"] or "none")) + [""]]
    return _table(rows, [f"inference, {d}"] + [c["name"] for c in cards] + ["how"], _widths(len(cards)))


def _configs(r: dict, ds_path: str | None) -> list[str]:
    z = r["deepspeed_config"]["zero_optimization"]
    keys = ", ".join(f"{k} {v:,}" for k, v in z.items() if isinstance(v, int) and not isinstance(v, bool) and k != "stage")
    ckpt = "on" if "activation_checkpointing" in r["deepspeed_config"] else "off"
    where = f"written to {ds_path}" if ds_path else "--deepspeed-config FILE writes it; --json prints it"
    f = r["fsdp"]
    lines = [f"DeepSpeed: ZeRO stage {z['stage']}, {keys} (from h = {r['model']['config']['hidden']:,} as "
             f"Hugging Face's 'auto' values), offload {r['setup']['offload']}, activation checkpointing {ckpt}; {where}",
             f"FSDP (Accelerate fsdp_config): {f['fsdp_sharding_strategy']}, fsdp_offload_params "
             f"{str(f['fsdp_offload_params']).lower()}, TRANSFORMER_BASED_WRAP of {f['fsdp_transformer_layer_cls_to_wrap']}, "
             f"fsdp_activation_checkpointing {str(f['fsdp_activation_checkpointing']).lower()}"]
    return lines + [f"  {note}" for note in r["fsdp_notes"]]


def render(r: dict, ds_path: str | None = None) -> str:
    parts = ["\n".join(_fill(line) for line in _header(r)), _inputs(r), _training(r), _step(r), _inference(r),
             "\n".join(_fill(line, "    ") for line in _configs(r, ds_path))]
    notes = [f"{c['name']}: {n}" for c in r["cards"] for n in c["notes"]]
    notes += [
        "Bounds, not predictions: compute at the dense matmul rate, collectives at busbw, decode at the memory "
        "bandwidth; attention-score FLOPs, tensor-parallel all-reduces, kernel efficiency and the logits are left out.",
        "algbw = busbw / factor (nccl-tests: (n-1)/n for all-gather and reduce-scatter, 2(n-1)/n for all-reduce); "
        "time = S / algbw. ZeRO traffic: Rajbhandari et al. 2020 (https://arxiv.org/abs/1910.02054) section 7.",
        "16 B per trained parameter (bf16 weights 2 + bf16 grads 2 + fp32 master 4 + Adam m 4 + v 4; ZeRO paper 3.1); "
        "activations: Korthikanti et al. 2022 (https://arxiv.org/abs/2205.05198), 34 s b h per layer with flash "
        "attention (the 5 a s^2 b term dropped), 2 s b h per layer kept with full recomputation.",
    ]
    parts.append("notes:\n" + "\n".join(_fill(f"- {n}") for n in notes))
    if r["sources"]:
        parts.append("sources:\n" + "\n".join(_fill(f"  {k}: {doc}", "      ") for k, doc in r["sources"].items()))
    return "\n\n".join(parts)
