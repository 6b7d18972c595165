"""The sizing arithmetic (bench/core/sizing.py, bench/core/sizing_config.py) against published and hand-computed numbers."""
import json
import math

import pytest

from bench.core import sizing, sizing_config
from bench.commands.size import load_model, shipped_models

SHIPPED = {m["name"]: m for m in shipped_models()}


def model(name):
    return load_model(name)[0]


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_parameter_count_rounds_to_the_published_count(name):
    # Tolerance: the published figure's own rounding (70.6B: within 0.05B), so 8.03B, 70.6B,
    # 405.9B, 46.7B and 72.7B are each met to the digit the publisher prints.
    published, half_digit = sizing.parse_count(SHIPPED[name]["published_params"])
    total = sizing.params(model(name)).total
    assert abs(total - published) <= half_digit, (total, published)


def test_mixtral_active_parameters_round_to_the_published_12_9b():
    published, half_digit = sizing.parse_count(SHIPPED["mixtral-8x7b"]["published_active_params"])
    p = sizing.params(model("mixtral-8x7b"))
    assert abs(p.active - published) <= half_digit
    assert p.router == 32 * 4096 * 8  # a 4096 x 8 router per layer


def test_llama_3_1_8b_components_by_hand():
    p = sizing.params(model("llama-3.1-8b"))
    h, i, L, V = 4096, 14336, 32, 128256
    attention = h * 4096 + 2 * h * 1024 + 4096 * h  # q, k, v (8 KV heads of 128), o
    assert p.embedding == p.head == V * h == 525_336_576
    assert p.attention == L * attention
    assert p.mlp == L * 3 * h * i
    assert p.norms == L * 2 * h + h
    assert p.total == 8_030_261_248  # the Hub's safetensors count, to the parameter


def test_qwen2_has_qkv_biases_and_tied_embeddings_drop_the_head():
    qwen = model("qwen2.5-72b")
    assert qwen.qkv_bias and not qwen.o_bias
    cfg = dict(SHIPPED["llama-3.1-8b"]["config"], tie_word_embeddings=True)
    tied = sizing.params(sizing.model_from_config("tied", cfg))
    assert tied.head == 0 and tied.total == 8_030_261_248 - 128256 * 4096


def test_kv_bytes_per_token():
    assert sizing.kv_bytes_per_token(model("llama-3.1-70b"), 2) == 2 * 80 * 8 * 128 * 2 == 327_680
    assert sizing.kv_bytes_per_token(model("llama-3.1-8b"), 2) == 131_072
    assert sizing.kv_bytes_per_token(model("llama-3.1-70b"), 1) == 163_840


def test_mixed_precision_adamw_is_16_bytes_per_parameter_sharded_by_zero_stage():
    m = model("llama-3.1-70b")
    p = sizing.params(m)
    P, n = p.total, 8
    assert sum(sizing.ADAMW_BYTES.values()) == 16
    expected = {0: (2 * P, 2 * P, 12 * P), 1: (2 * P, 2 * P, 12 * P / n), 2: (2 * P, 2 * P / n, 12 * P / n),
                3: (2 * P / n, 2 * P / n, 12 * P / n)}
    for stage, (w, g, o) in expected.items():
        mem = sizing.train_memory(m, p, sizing.TrainSetup(zero=stage, gpus=n, seq=4096))
        assert (mem.weights, mem.gradients, mem.optimizer) == pytest.approx((w, g, o))
    one = sizing.train_memory(m, p, sizing.TrainSetup(zero=3, gpus=1, seq=4096))
    assert one.weights + one.gradients + one.optimizer == pytest.approx(16 * P) and one.gathered == 0


def test_offload_moves_optimizer_and_gradients_to_the_host():
    m = model("llama-3.1-70b")
    p = sizing.params(m)
    mem = sizing.train_memory(m, p, sizing.TrainSetup(zero=3, gpus=8, offload="optimizer"))
    assert mem.gradients == mem.optimizer == 0 and mem.weights == pytest.approx(2 * p.total / 8)
    assert mem.host == pytest.approx(14 * p.total)
    all_off = sizing.train_memory(m, p, sizing.TrainSetup(zero=3, gpus=8, offload="params"))
    assert all_off.weights == 0 and all_off.host == pytest.approx(16 * p.total)
    assert sizing.check_setup(sizing.TrainSetup(zero=2, offload="params"))
    assert sizing.check_setup(sizing.TrainSetup(zero=0, offload="optimizer"))


def test_activations_hand_computed():
    m = sizing.ModelConfig("toy", hidden=1024, intermediate=4096, layers=2, heads=16, kv_heads=16, head_dim=64,
                           vocab=1000, tied=False)
    s, b, h, a = 2048, 2, 1024, 16
    per_layer = s * b * h * (34 + 5 * a * s / h)  # Korthikanti et al. 2022, eq. 1
    assert per_layer == 142_606_336 + 671_088_640
    assert sizing.activation_bytes(m, s, b, checkpointing=False, flash=False) == 2 * per_layer
    assert sizing.activation_bytes(m, s, b, checkpointing=False, flash=True) == 2 * 142_606_336
    assert sizing.activation_bytes(m, s, b, checkpointing=True, flash=True) == 2 * (2 * s * b * h) + 142_606_336


def test_lora_adapters_on_attention_and_mlp_projections():
    m = model("llama-3.1-8b")
    per_layer = (4096 + 4096) + 2 * (4096 + 1024) + (4096 + 4096) + 3 * (4096 + 14336)
    assert sizing.lora_params(m, 16) == 16 * 32 * per_layer == 41_943_040
    p = sizing.params(m)
    mem = sizing.train_memory(m, p, sizing.TrainSetup(mode="lora", lora_rank=16, zero=2, gpus=8))
    assert mem.weights == pytest.approx(2 * (p.total + 41_943_040))  # frozen base in bf16, not sharded below ZeRO-3
    assert mem.optimizer == pytest.approx(12 * 41_943_040 / 8)


def test_busbw_factor_is_the_collective_familys():
    collective = pytest.importorskip("bench.families.collective")
    for op in ("all_reduce", "all_gather", "reduce_scatter"):
        for n in (2, 8, 64):
            assert sizing.busbw_factor(op, n) == collective.busbw_factor(op, n)


def test_step_time_hand_computed_and_which_part_bounds_it():
    m = model("llama-3.1-70b")
    p = sizing.params(m)
    s = sizing.TrainSetup(zero=3, gpus=8, seq=4096, batch=1)
    busbw = {"all_gather": 63e9, "reduce_scatter": 63e9, "all_reduce": 63e9}
    st = sizing.step_time(p, s, p.total, 756.5e12, busbw, None)
    assert st.compute_s == pytest.approx(6 * p.total * 4096 / 756.5e12)
    # ZeRO-3: two all-gathers of the bf16 weights and one reduce-scatter of the bf16 gradients,
    # each S x (n-1)/n / busbw.
    assert st.comm_s == pytest.approx(3 * 2 * p.total * 7 / 8 / 63e9)
    # 4k tokens per GPU over PCIe Gen5 x16: moving the weights 3 times takes longer than the math...
    assert st.bound == "communication" and st.step_s == st.comm_s
    # ...over NVLink's 450 GB/s per direction it does not.
    nvlink = sizing.step_time(p, s, p.total, 756.5e12, {k: 450e9 for k in busbw}, None)
    assert nvlink.bound == "compute" and nvlink.step_s == nvlink.compute_s
    ckpt = sizing.step_time(p, sizing.TrainSetup(zero=3, gpus=1, seq=4096, checkpointing=True), p.total, 756.5e12,
                            busbw, None)
    assert ckpt.flops_factor == 8 and ckpt.comm == []


def test_smallest_gpu_count_is_the_first_that_fits():
    m = model("llama-3.1-70b")
    p = sizing.params(m)
    s = sizing.TrainSetup(zero=3, gpus=8, seq=4096)
    n = sizing.smallest_train_gpus(m, p, s, 80e9)
    fits = [sizing.train_memory(m, p, sizing.TrainSetup(zero=3, gpus=k, seq=4096, checkpointing=True)).total
            <= 0.9 * 80e9 for k in (n - 1, n)]
    assert fits == [False, True]
    assert sizing.smallest_train_gpus(m, p, sizing.TrainSetup(zero=0, seq=4096), 80e9) is None


def test_inference_capacity_and_bounds_hand_computed():
    m = model("llama-3.1-70b")
    p = sizing.params(m)
    inf = sizing.inference(m, p, "bf16", 32768, 8, 80e9, 2000e9, 756.5e12)
    usable, w_gpu, kv_gpu = 0.9 * 80e9, 2 * p.total / 8, 327_680 / 8
    assert inf.weight_bytes_per_gpu == pytest.approx(w_gpu)
    assert inf.sequences == math.floor((usable - w_gpu) / (kv_gpu * 32768))
    assert inf.decode_tps_one == pytest.approx(2000e9 / (w_gpu + 32768 * kv_gpu))
    assert inf.decode_tps_total == pytest.approx(inf.sequences * 2000e9 / (w_gpu + inf.sequences * 32768 * kv_gpu))
    assert inf.prefill_s == pytest.approx(2 * p.total * 32768 / (8 * 756.5e12))
    assert sizing.inference(m, p, "fp4", 32768, 8, 80e9, 2e12, None).weight_bytes == pytest.approx(0.5625 * p.total)


def test_config_errors_name_the_missing_keys():
    with pytest.raises(sizing.ConfigError, match="num_hidden_layers, num_attention_heads"):
        sizing.model_from_config("x", {"hidden_size": 8, "intermediate_size": 8, "vocab_size": 8})
    with pytest.raises(sizing.ConfigError, match="latent attention"):
        sizing.model_from_config("x", dict(SHIPPED["llama-3.1-8b"]["config"], kv_lora_rank=512))
    with pytest.raises(sizing.ConfigError, match="num_hidden_layers"):
        sizing.model_from_config("x", dict(SHIPPED["llama-3.1-8b"]["config"], num_hidden_layers=0))


@pytest.mark.parametrize("text, tokens", [("32k", 32768), ("4096", 4096), ("128K", 131072), (" 8k ", 8192)])
def test_parse_context(text, tokens):
    assert sizing.parse_context(text) == tokens


@pytest.mark.parametrize("text", ["abc", "0", "-1", "1.5k", "32kk", ""])
def test_parse_context_rejects(text):
    with pytest.raises(ValueError):
        sizing.parse_context(text)


# Keys DeepSpeed's config models accept (deepspeed/runtime/zero/config.py DeepSpeedZeroConfig fields
# and aliases, zero/offload_config.py, activation_checkpointing/config.py, and the top-level
# batch and bf16 keys of https://www.deepspeed.ai/docs/config-json/). DeepSpeed rejects others.
DEEPSPEED_TOP = {"train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size", "bf16",
                 "zero_optimization", "activation_checkpointing"}
DEEPSPEED_ZERO = {"stage", "overlap_comm", "contiguous_gradients", "reduce_bucket_size", "reduce_scatter",
                  "allgather_bucket_size", "stage3_prefetch_bucket_size", "stage3_param_persistence_threshold",
                  "stage3_max_live_parameters", "stage3_max_reuse_distance", "stage3_gather_16bit_weights_on_model_save",
                  "offload_optimizer", "offload_param", "sub_group_size"}
DEEPSPEED_CKPT = {"partition_activations", "cpu_checkpointing", "contiguous_memory_optimization",
                  "number_checkpoints", "synchronize_checkpoint_boundary", "profile"}


def test_deepspeed_config_keys_and_auto_bucket_sizes():
    m = model("llama-3.1-70b")
    cfg = json.loads(json.dumps(sizing_config.deepspeed_config(
        m, sizing.TrainSetup(zero=3, gpus=8, offload="params", checkpointing=True, batch=2))))
    assert set(cfg) <= DEEPSPEED_TOP and set(cfg["zero_optimization"]) <= DEEPSPEED_ZERO
    assert set(cfg["activation_checkpointing"]) <= DEEPSPEED_CKPT
    z, h = cfg["zero_optimization"], 8192
    assert z["stage"] == 3 and z["reduce_bucket_size"] == h * h
    assert z["stage3_prefetch_bucket_size"] == int(0.9 * h * h) and isinstance(z["stage3_prefetch_bucket_size"], int)
    assert z["stage3_param_persistence_threshold"] == 10 * h
    assert z["offload_optimizer"] == z["offload_param"] == {"device": "cpu", "pin_memory": True}
    assert cfg["bf16"] == {"enabled": True} and cfg["train_micro_batch_size_per_gpu"] == 2
    two = sizing_config.deepspeed_config(m, sizing.TrainSetup(zero=2, gpus=8))
    assert "stage3_prefetch_bucket_size" not in two["zero_optimization"] and "activation_checkpointing" not in two


def test_deepspeed_itself_accepts_the_config():
    config = pytest.importorskip("deepspeed.runtime.config")
    m = model("llama-3.1-70b")
    for s in (sizing.TrainSetup(zero=3, offload="params", checkpointing=True), sizing.TrainSetup(zero=2)):
        parsed = config.DeepSpeedConfig(json.loads(json.dumps(sizing_config.deepspeed_config(m, s))))
        assert parsed.zero_config.stage == s.zero and parsed.zero_config.reduce_bucket_size == 8192 * 8192


def test_fsdp_settings_follow_the_stage():
    m = model("mixtral-8x7b")
    full, notes = sizing_config.fsdp_settings(m, sizing.TrainSetup(zero=3, checkpointing=True))
    assert full["fsdp_sharding_strategy"] == "FULL_SHARD" and full["fsdp_activation_checkpointing"]
    assert full["fsdp_transformer_layer_cls_to_wrap"] == "MixtralDecoderLayer" and notes == []
    opt, notes = sizing_config.fsdp_settings(m, sizing.TrainSetup(zero=1, offload="optimizer"))
    assert opt["fsdp_sharding_strategy"] == "SHARD_GRAD_OP" and not opt["fsdp_offload_params"] and len(notes) == 2
