"""What `cardbench run` prints: the first line, the spec entry of each card, the header, the table."""
from __future__ import annotations

import torch
from tabulate import tabulate

from ..core import specs
from ..core.devices import Target
from ..core.units import number


def first_line(targets: list[Target], cpu_mode: bool) -> str:
    if cpu_mode:
        why = "no CUDA GPU visible" if not torch.cuda.is_available() else "--device cpu"
        return (f"cardbench: CPU mode ({why}): measuring this host with torch; Triton and GPU-only rows "
                "are skipped; numbers describe this host, not a GPU")
    names = ", ".join(f"{t.device} {t.name}" for t in targets)
    return f"cardbench: measuring {len(targets)} GPU(s): {names}"


def spec_line(t: Target) -> str:
    if t.spec is not None:
        return f"{t.device}: spec entry '{t.spec.name}' ({t.spec.origin})"
    if not t.is_cuda:
        return f"{t.device}: no spec entry for this CPU; normalization columns stay empty"
    return f"{t.device}: " + specs.unknown_card_message(t.identity.get("device_name", ""),
                                                        t.identity.get("pci_device_id", ""))


def header(run: dict[str, str]) -> str:
    keys = ("host", "cpu_model", "driver_version", "cuda_runtime_version", "torch_version",
            "triton_version", "nccl_version", "cardbench_version", "cardbench_commit", "profile", "run_id")
    return "  ".join(f"{k}={run[k]}" for k in keys if run.get(k))


def print_table(rows: list[dict]) -> None:
    if not rows:
        return
    by_device: dict[str, list[dict]] = {}
    for r in rows:
        index = r.get("device_index", "")
        where = "cpu" if index == "" else f"cuda:{index}"
        by_device.setdefault(f"{where}: {r.get('device_name', '')}", []).append(r)
    for device, device_rows in by_device.items():
        # Rows not run for the same reason are told once, not once per case.
        waived: dict[tuple[str, str, str], int] = {}
        shown = []
        for r in device_rows:
            if r["status"] in ("skipped", "unsupported"):
                key = (r["status"], r["provider"], r["message"])
                waived[key] = waived.get(key, 0) + 1
            else:
                shown.append(r)
        print(f"\n{device}")
        if shown:
            headers = ["benchmark", "provider", "case", "value", "p10..p90", "% of spec", "% derived", "status", "note"]
            table = [table_row(r) for r in shown]
            for col in (6, 5):  # drop a normalization column no row has (unknown card, CPU mode)
                if not any(t[col] for t in table):
                    headers.pop(col)
                    table = [t[:col] + t[col + 1:] for t in table]
            print(tabulate(table, headers=headers, disable_numparse=True))
        for (status, provider, message), count in waived.items():
            print(f"{status}: {count} {provider} row(s): {message}")
        summary = copy_summary(device_rows)
        if summary:
            print(summary)


def table_row(r: dict) -> list[str]:
    ok = r["status"] == "ok"
    value = f"{number(r['value'])} {r['unit']}" if ok else ""
    spread = f"{number(r['p10'])}..{number(r['p90'])}" if ok else ""
    pct_spec = f"{float(r['pct_of_spec']):.1f}%" if ok and r.get("pct_of_spec") not in (None, "") else ""
    pct_derived = f"{float(r['pct_of_derived']):.1f}%" if ok and r.get("pct_of_derived") not in (None, "") else ""
    name = f"{r['family']}/{r['benchmark']}"
    if r["family"] in ("collective", "llm", "burn") and r["dtype"]:  # bf16 and fp32 (fp8) rows of one size side by side
        name += f" {r['dtype']}"
    return [name, r["provider"], r["case"], value, spread, pct_spec, pct_derived, r["status"], r["message"]]


def copy_summary(rows: list[dict]) -> str:
    """Triton copy against torch copy_ at the plateau: the headline should never be below the framework."""
    found = {r["provider"]: float(r["value"]) for r in rows
             if r["family"] == "memory" and r["benchmark"] == "copy" and r["case"] == "plateau" and r["status"] == "ok"}
    if "triton" in found and "torch" in found:
        return f"plateau copy: triton {found['triton']:,.1f} GB/s = {found['triton'] / found['torch']:.1%} of torch copy_"
    return ""
