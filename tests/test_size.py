"""`cardbench size`: measured-versus-claimed inputs, the verdicts a user reads, and clear exits on bad input."""
import json

import pytest

from bench.cli import main
from bench.core.results import ResultsWriter

H100_PCIE, RTX_SERVER = "H100 PCIe 80GB", "RTX PRO 6000 Blackwell Server Edition"


def run(capsys, *args):
    try:
        code = main(["size", *map(str, args)])
    except SystemExit as e:  # argparse rejects a bad option value with exit 2
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def run_json(capsys, *args):
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def row(**kw):
    base = {"device_name": "NVIDIA H100 PCIe", "device_uuid": "GPU-0", "device_index": "0",
            "pci_device_id": "0x233110DE", "spec_entry": H100_PCIE, "memory_total_bytes": 85.0e9,
            "provider": "torch", "status": "ok", "n_samples": 5, "timer": "cuda_events"}
    base.update(kw)
    return base


def h100_results(path, read_gb_s=(1800.0,)):
    """A small H100 PCIe run: memory plateau, bf16 matmul at two shapes, peak all-gather / reduce-scatter."""
    w = ResultsWriter(path, {"run_id": "abc123def456", "host": "node1", "command": "cardbench run"})
    for i, gb_s in enumerate(read_gb_s):
        for bench, value in (("read", gb_s), ("copy", 1900.0)):
            w.write(row(device_uuid=f"GPU-{i}", device_index=str(i), family="memory", benchmark=bench,
                        dtype="fp32", case="plateau", metric="bandwidth", unit="GB/s", value=value))
    for case, tflops in (("8192x8192x8192", 700.0), ("16384x16384x4096", 600.0)):
        w.write(row(family="matmul", benchmark="bf16", dtype="bf16", case=case, metric="throughput",
                    unit="TFLOP/s", value=tflops))
    for op, gb_s in (("all_gather", 40.0), ("reduce_scatter", 45.0)):
        w.write(row(family="collective", benchmark=op, provider="nccl", dtype="bf16", case="peak", metric="busbw",
                    unit="GB/s", value=gb_s, params=json.dumps({"world_size": 8})))
    w.close()
    return path


def test_readme_example_side_by_side_claims_with_sources(capsys):
    code, out, err = run(capsys, "llama-3.1-70b", "--card", "H100 PCIe", "--card", "RTX PRO 6000 Blackwell Server",
                         "--gpus", 8, "--context", "32k")
    assert code == 0, err
    for text in (H100_PCIE, RTX_SERVER, "claimed: memory_size_gb: S1", "327,680 B", "does not fit",
                 "no FP4 tensor cores", "sources:", "S13:"):
        assert text in out
    r = run_json(capsys, "llama-3.1-70b", "--card", "H100 PCIe", "--card", "RTX PRO 6000 Blackwell Server",
                 "--context", "32k")
    h100, rtx = r["cards"]
    assert h100["inputs"]["memory"] == {"value": 80e9, "origin": "claimed", "source": "memory_size_gb: S1"}
    assert h100["inputs"]["matmul_bf16"]["value"] == 756.5e12 and rtx["inputs"]["matmul_bf16"]["value"] == 480e12
    assert rtx["inputs"]["matmul_bf16"]["source"].endswith("derived")  # the entry's confidence is carried along
    assert h100["inference"]["kv_bytes_per_token"] == 327_680
    # 8 GPUs: the H100 PCIe's NVLink bridge joins a pair only, so the ring runs on PCIe Gen5 x16.
    assert h100["inputs"]["busbw_all_gather"]["value"] == pytest.approx(63.015e9, rel=1e-3)
    assert "bridge joins 2 GPUs" in h100["inputs"]["busbw_all_gather"]["source"]
    assert not h100["training"]["fits"] and h100["training"]["smallest_gpus"] > 8
    assert h100["inference"]["sequences"] > 0 and not h100["inference"]["fp4_cores"] and rtx["inference"]["fp4_cores"]


def test_link_is_nvlink_where_it_reaches_every_gpu(capsys):
    pair = run_json(capsys, "llama-3.1-8b", "--card", "H100 PCIe", "--gpus", 2)
    assert pair["cards"][0]["inputs"]["busbw_all_gather"]["value"] == 300e9  # 600 GB/s bridge, both directions
    sxm = run_json(capsys, "llama-3.1-8b", "--card", "H100 SXM", "--gpus", 8)
    assert sxm["cards"][0]["inputs"]["busbw_reduce_scatter"]["value"] == 450e9


def test_measured_numbers_replace_claims_and_name_the_file(tmp_path, capsys):
    path = h100_results(tmp_path / "h100.csv", read_gb_s=(1800.0, 1750.0))
    r = run_json(capsys, "llama-3.1-70b", "--results", path)
    card = r["cards"][0]
    assert card["name"] == H100_PCIE
    inputs = card["inputs"]
    # memory: `read` before `copy`, and the slower of the two GPUs (a step waits for it)
    assert inputs["memory_bandwidth"]["value"] == 1750e9 and inputs["memory_bandwidth"]["origin"] == "measured"
    assert "h100.csv" in inputs["memory_bandwidth"]["source"] and "slowest of 2 GPUs" in inputs["memory_bandwidth"]["source"]
    # matmul: the largest fixed shape when there is no `best` row, not the highest value
    assert inputs["matmul_bf16"]["value"] == 600e12 and "16384x16384x4096" in inputs["matmul_bf16"]["source"]
    assert inputs["busbw_all_gather"] == {"value": 40e9, "origin": "measured",
                                          "source": "h100.csv: all_gather bf16 peak busbw, 8 ranks"}
    assert inputs["memory"]["origin"] == "reported" and inputs["memory"]["value"] == 85e9
    # what the run did not measure stays claimed, with its source
    assert inputs["matmul_fp8"] == {"value": 1513e12, "origin": "claimed", "source": "fp8_dense: S1"}
    comm = {c["collective"]: c["seconds"] for c in card["step"]["comm"]}
    assert comm["reduce_scatter"] == pytest.approx(2 * r["model"]["params"]["total"] * 7 / 8 / 45e9)


def test_best_row_wins_and_results_for_another_card_are_not_used(tmp_path, capsys):
    path = tmp_path / "h100.csv"
    w = ResultsWriter(path, {"run_id": "abc123def456", "host": "node1"})
    w.write(row(family="matmul", benchmark="bf16", dtype="bf16", case="16384x16384x4096", metric="throughput",
                unit="TFLOP/s", value=600.0))
    w.write(row(family="matmul", benchmark="bf16", dtype="bf16", case="best", metric="throughput",
                unit="TFLOP/s", value=650.0))
    w.close()
    r = run_json(capsys, "llama-3.1-8b", "--results", path, "--card", "H100 PCIe", "--card", "H100 SXM")
    pcie, sxm = r["cards"]
    assert pcie["inputs"]["matmul_bf16"]["value"] == 650e12
    assert sxm["inputs"]["matmul_bf16"] == {"value": 989.5e12, "origin": "claimed", "source": "bf16_dense: S1, S6"}


def test_checkpointing_only_when_needed_and_the_deepspeed_file(tmp_path, capsys):
    ds = tmp_path / "ds.json"
    r = run_json(capsys, "llama-3.1-8b", "--card", "H100 SXM", "--gpus", 8, "--context", "4k",
                 "--deepspeed-config", ds)
    t = r["cards"][0]["training"]
    assert t["fits"] and not t["checkpointing"] and r["cards"][0]["step"]["flops_factor"] == 6
    written = json.loads(ds.read_text())
    assert written == r["deepspeed_config"] and written["zero_optimization"]["stage"] == 3
    assert "activation_checkpointing" not in written
    long = run_json(capsys, "llama-3.1-8b", "--card", "H100 SXM", "--context", "32k")
    assert long["cards"][0]["training"]["checkpointing"] and "activation_checkpointing" in long["deepspeed_config"]


def test_a_config_json_path_is_a_model(tmp_path, capsys):
    from bench.commands.size import shipped_models

    cfg = next(m for m in shipped_models() if m["name"] == "llama-3.1-8b")["config"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    r = run_json(capsys, path, "--card", "H100 SXM")
    assert r["model"]["params"]["total"] == 8_030_261_248


def test_lora_and_fp4_on_a_card_without_fp4(capsys):
    code, out, err = run(capsys, "mixtral-8x7b", "--card", "H100 SXM", "--card", "RTX PRO 6000 WS", "--train", "lora",
                         "--zero", 2, "--offload", "optimizer", "--dtype", "fp4", "--gpus", 2)
    assert code == 0, err
    assert "LoRA rank 16" in out and "no FP4 tensor cores" in out and "host memory" in out
    r = run_json(capsys, "mixtral-8x7b", "--card", "H100 SXM", "--card", "RTX PRO 6000 WS", "--dtype", "fp4")
    h100, rtx = (c["inference"] for c in r["cards"])
    assert not h100["supported"] and "sequences" not in h100  # said, not computed
    assert rtx["supported"] and rtx["weight_bytes"] == pytest.approx(4.5 / 8 * r["model"]["params"]["total"])


@pytest.mark.parametrize("args, message", [
    (["llama-3.1-70b", "--card", "H100"], "close: H100 SXM5 80GB, H100 PCIe 80GB"),
    (["llama-3.1-70b", "--card", "H100 PCIe", "--gpus", 0], "--gpus: '0' is not a whole number"),
    (["llama-3.1-70b", "--card", "H100 PCIe", "--context", "abc"], "--context: 'abc' is not a context length"),
    (["llama-9b", "--card", "H100 PCIe"], "neither a shipped model (llama-3.1-8b"),
    (["llama-3.1-70b"], "name a card with --card NAME"),
    (["llama-3.1-70b", "--card", "H100 PCIe", "--zero", 2, "--offload", "params"], "needs ZeRO stage 3"),
])
def test_bad_input_exits_2_with_a_clear_message(capsys, args, message):
    code, out, err = run(capsys, *args)
    assert code == 2 and message in err and out == ""


def test_config_missing_keys_and_broken_files_exit_2(tmp_path, capsys):
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"hidden_size": 4096, "vocab_size": 32000}))
    code, _, err = run(capsys, bad, "--card", "H100 PCIe")
    assert code == 2 and "missing required key(s) intermediate_size, num_hidden_layers, num_attention_heads" in err
    bad.write_text("{not json")
    code, _, err = run(capsys, bad, "--card", "H100 PCIe")
    assert code == 2 and "not a readable JSON config" in err
    junk = tmp_path / "junk.csv"
    junk.write_text("a,b\n1,2\n")
    code, _, err = run(capsys, "llama-3.1-8b", "--results", junk)
    assert code == 2 and "junk.csv, line 1" in err
