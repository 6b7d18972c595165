"""What a card's numbers mean for a model: parameters, fine-tuning memory, step-time bounds, inference capacity.

Pure arithmetic for `cardbench size` (bench/size.py reads files and prints): no I/O, no torch.
Units: bytes, seconds, FLOP/s, bytes/s; decimal (GB = 1e9 B). Every formula cites its source
beside it; the assumptions the sources do not settle are stated where they are made.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

REQUIRED_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
# Architectures whose parameters these formulas do not describe: refuse rather than miscount.
UNSUPPORTED_KEYS = {
    "kv_lora_rank": "multi-head latent attention (DeepSeek-V2/V3)",
    "moe_intermediate_size": "MoE experts of their own width (Qwen-MoE, DeepSeek)",
    "shared_expert_intermediate_size": "shared MoE experts (Qwen-MoE)",
    "n_routed_experts": "routed plus shared experts (DeepSeek)",
}
# Mixed-precision AdamW, bytes per trainable parameter (ZeRO paper, Rajbhandari et al. 2020,
# section 3.1, https://arxiv.org/abs/1910.02054: "2Ψ + 2Ψ + 12Ψ" with K = 12).
ADAMW_BYTES = {"bf16 weights": 2, "bf16 gradients": 2, "fp32 master weights": 4, "Adam m (fp32)": 4,
               "Adam v (fp32)": 4}
# Inference weight bytes per parameter. fp4 is NVFP4: a 4-bit value plus one FP8 E4M3 scale per
# 16 values = 4.5 bits (https://developer.nvidia.com/blog/introducing-nvfp4-for-efficient-and-accurate-low-precision-inference/).
WEIGHT_BYTES = {"bf16": 2.0, "fp8": 1.0, "fp4": 4.5 / 8}
KV_BYTES = {"bf16": 2, "fp8": 1, "fp4": 1}  # fp8/fp4 weights: an FP8 KV cache (vLLM --kv-cache-dtype fp8)
# Share of device memory kept free: CUDA context, NCCL buffers, allocator fragmentation,
# activation workspace. vLLM's default gpu_memory_utilization is 0.9 (the same 10%):
# https://docs.vllm.ai/en/latest/configuration/engine_args.html
RESERVE_FRACTION = 0.10
MAX_GPUS = 4096  # the search for the smallest GPU count stops here


class ConfigError(ValueError):
    """A model config the arithmetic cannot use; the message says which keys and why."""


@dataclass(frozen=True)
class ModelConfig:
    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    experts: int = 1  # MoE experts per layer (Mixtral: num_local_experts)
    experts_per_token: int = 1
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    layer_class: str = ""  # the decoder layer class FSDP wraps (LlamaDecoderLayer)


def model_from_config(name: str, cfg: dict) -> ModelConfig:
    """A Hugging Face config.json (as a dict) -> ModelConfig; raises ConfigError naming the keys."""
    if not isinstance(cfg, dict):
        raise ConfigError("not a JSON object of config.json keys")
    missing = [k for k in REQUIRED_KEYS if k not in cfg]
    if missing:
        raise ConfigError(f"missing required key(s) {', '.join(missing)} (needed: {', '.join(REQUIRED_KEYS)})")
    odd = [k for k in UNSUPPORTED_KEYS if cfg.get(k)]
    if odd:
        raise ConfigError(f"unsupported architecture: {UNSUPPORTED_KEYS[odd[0]]} (key {odd[0]})")

    def whole(key: str, default=None) -> int:
        v = cfg.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ConfigError(f"{key} = {v!r}: expected a positive whole number")
        return v

    h, heads = whole("hidden_size"), whole("num_attention_heads")
    kv = whole("num_key_value_heads", heads)  # absent: multi-head attention (HF LlamaConfig's default)
    if heads % kv:
        raise ConfigError(f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}")
    head_dim = cfg.get("head_dim")
    if head_dim is None:
        if h % heads:
            raise ConfigError(f"hidden_size {h} is not a multiple of num_attention_heads {heads}; give head_dim")
        head_dim = h // heads
    experts = whole("num_local_experts", 1)
    arch = cfg.get("architectures") or [""]
    attention_bias = bool(cfg.get("attention_bias", False))  # Llama: on q, k, v and o
    qwen2 = cfg.get("model_type") == "qwen2"  # Qwen2Attention: bias on q, k, v (transformers modeling_qwen2.py)
    return ModelConfig(
        name=name, hidden=h, intermediate=whole("intermediate_size"), layers=whole("num_hidden_layers"),
        heads=heads, kv_heads=kv, head_dim=whole("head_dim", head_dim), vocab=whole("vocab_size"),
        tied=bool(cfg.get("tie_word_embeddings", False)), experts=experts,
        experts_per_token=whole("num_experts_per_tok", 1) if experts > 1 else 1,
        qkv_bias=attention_bias or qwen2, o_bias=attention_bias, mlp_bias=bool(cfg.get("mlp_bias", False)),
        layer_class=str(arch[0]).replace("ForCausalLM", "DecoderLayer") if arch[0] else "")


# ---------------------------------------------------------------- parameters

@dataclass(frozen=True)
class Params:
    embedding: int
    attention: int  # all layers: q, k, v, o (grouped KV heads) and their biases
    mlp: int  # all layers, all experts: gate, up, down (SwiGLU, 3 matrices)
    router: int
    norms: int
    head: int  # 0 when tied to the embedding
    total: int
    active: int  # per token: MoE counts experts_per_token experts
    per_layer: int
    largest_module: int  # a decoder layer or the embedding matrix, whichever is larger


def params(m: ModelConfig) -> Params:
    """Parameter count from the config: embeddings, GQA attention, gated MLP, MoE router, RMSNorms, head.

    Attention: q and o are h x (heads*head_dim), k and v h x (kv_heads*head_dim). MLP: gate, up
    (h x i) and down (i x h), the SwiGLU of Llama / Mixtral / Qwen2 (Shazeer 2020,
    https://arxiv.org/abs/2002.05202). Norms: RMSNorm weights, two per layer plus the final one.
    """
    h, q, kv = m.hidden, m.heads * m.head_dim, m.kv_heads * m.head_dim
    attn = 2 * h * q + 2 * h * kv + (q + 2 * kv if m.qkv_bias else 0) + (h if m.o_bias else 0)
    expert = 3 * h * m.intermediate + (2 * m.intermediate + h if m.mlp_bias else 0)
    router = h * m.experts if m.experts > 1 else 0
    norms = 2 * h
    per_layer = attn + expert * m.experts + router + norms
    embedding, head = m.vocab * h, 0 if m.tied else m.vocab * h
    total = embedding + head + m.layers * per_layer + h
    active = total - m.layers * expert * (m.experts - m.experts_per_token)
    return Params(embedding, m.layers * attn, m.layers * expert * m.experts, m.layers * router,
                  m.layers * norms + h, head, total, active, per_layer, max(per_layer, embedding))


def lora_params(m: ModelConfig, rank: int) -> int:
    """Trainable LoRA parameters: A (r x in) and B (out x r) on q, k, v, o and on every expert's
    gate, up and down projections (Hu et al. 2021, https://arxiv.org/abs/2106.09685)."""
    h, q, kv, i = m.hidden, m.heads * m.head_dim, m.kv_heads * m.head_dim, m.intermediate
    attn = (h + q) + 2 * (h + kv) + (q + h)
    mlp = 3 * (h + i) * m.experts
    return rank * m.layers * (attn + mlp)


# ---------------------------------------------------------------- fine-tuning memory

@dataclass(frozen=True)
class TrainSetup:
    mode: str = "full"  # "full" or "lora"
    lora_rank: int = 16
    zero: int = 3  # ZeRO stage; FSDP FULL_SHARD = 3, SHARD_GRAD_OP = 2, NO_SHARD = 0
    offload: str = "none"  # "none", "optimizer" (ZeRO-Offload), "params" (optimizer and parameters)
    gpus: int = 8
    seq: int = 4096
    batch: int = 1  # sequences per GPU per step (micro-batch)
    checkpointing: bool = False  # full activation recomputation
    flash: bool = True  # flash attention: the s^2 attention-score activations are never stored


def check_setup(s: TrainSetup) -> str | None:
    """Why DeepSpeed would refuse this setup, or None (https://www.deepspeed.ai/docs/config-json/)."""
    if s.offload == "params" and s.zero != 3:
        return "parameter offload (--offload params) needs ZeRO stage 3"
    if s.offload != "none" and s.zero == 0:
        return "optimizer offload needs ZeRO stage 1, 2 or 3"
    return None


def activation_bytes(m: ModelConfig, seq: int, batch: int, checkpointing: bool, flash: bool = True) -> float:
    """Activation memory of all layers (Korthikanti et al. 2022, https://arxiv.org/abs/2205.05198, eq. 1-2).

    Per layer sbh(34 + 5as/h) bytes (16-bit activations, no tensor parallelism); flash attention
    never stores the a*s*s score matrices, so the 5as/h term is dropped. Full recomputation keeps
    only each layer's input, 2sbh, plus one layer's activations while it is recomputed in the
    backward pass. The formula is the paper's GPT block (4h GeLU MLP, one KV head per head);
    SwiGLU and grouped KV heads shift the 34 somewhat. The logits (s*b*vocab) are not counted.
    """
    s, b, h = seq, batch, m.hidden
    layer = s * b * h * 34 + (0 if flash else 5 * m.heads * s * s * b)
    return m.layers * 2 * s * b * h + layer if checkpointing else m.layers * layer


@dataclass(frozen=True)
class TrainMemory:
    trainable: int
    weights: float  # bytes on each GPU
    gradients: float
    optimizer: float
    gathered: float  # ZeRO-3 working set: whole modules gathered for compute
    activations: float
    host: float  # bytes offloaded to host memory, whole node
    total: float


def train_memory(m: ModelConfig, p: Params, s: TrainSetup) -> TrainMemory:
    """Bytes per GPU: weights, gradients and AdamW states sharded by ZeRO stage over s.gpus.

    ZeRO (https://arxiv.org/abs/1910.02054, figure 1): stage 1 shards the optimizer states,
    stage 2 also the gradients, stage 3 also the weights. LoRA: the frozen base is kept in bf16
    (2 B/param, sharded only by stage 3); the adapters carry the 16 B/param. Offload: optimizer
    states and gradient partitions go to host memory (ZeRO-Offload, https://arxiv.org/abs/2101.06840);
    "params" also the bf16 weights (ZeRO-Infinity, https://arxiv.org/abs/2104.07857).
    """
    n = s.gpus
    trainable = p.total if s.mode == "full" else lora_params(m, s.lora_rank)
    frozen = 0 if s.mode == "full" else p.total
    weights = 2 * (frozen + trainable) / (n if s.zero >= 3 else 1)
    grads = 2 * trainable / (n if s.zero >= 2 else 1)
    optimizer = 12 * trainable / (n if s.zero >= 1 else 1)
    host = 0.0
    if s.offload in ("optimizer", "params"):
        host += 14 * trainable
        grads = optimizer = 0.0
    if s.offload == "params":
        host += 2 * (frozen + trainable)
        weights = 0.0
    gathered = 0.0
    if s.zero == 3 and (n > 1 or s.offload == "params"):
        # The module in use and the one prefetched, in bf16, plus the module's full bf16
        # gradient before its reduce-scatter (none for a frozen LoRA base).
        gathered = (2 + 2 + (2 if s.mode == "full" else 0)) * p.largest_module
    act = activation_bytes(m, s.seq, s.batch, s.checkpointing, s.flash)
    total = weights + grads + optimizer + gathered + act
    return TrainMemory(trainable, weights, grads, optimizer, gathered, act, host, total)


def usable_bytes(memory_bytes: float) -> float:
    return memory_bytes * (1 - RESERVE_FRACTION)


def smallest_train_gpus(m: ModelConfig, p: Params, s: TrainSetup, memory_bytes: float) -> int | None:
    """Fewest GPUs (same stage, offload, batch; full checkpointing) whose per-GPU total fits, or None."""
    for n in range(1, MAX_GPUS + 1):
        t = TrainSetup(s.mode, s.lora_rank, s.zero, s.offload, n, s.seq, s.batch, True, s.flash)
        if train_memory(m, p, t).total <= usable_bytes(memory_bytes):
            return n
        if s.zero == 0:
            return None  # nothing is sharded: more GPUs do not help
    return None


# ---------------------------------------------------------------- step time, lower bound

def busbw_factor(op: str, n: int) -> float:
    """nccl-tests' busbw = algbw x factor (doc/PERFORMANCE.md, https://github.com/NVIDIA/nccl-tests);
    the same factor as bench.families.collective.busbw_factor, without importing torch."""
    return 2 * (n - 1) / n if op == "all_reduce" else (n - 1) / n


def traffic(p: Params, s: TrainSetup, trainable: int) -> list[tuple[str, str, float]]:
    """Collectives of one step: (collective, what, bytes S as nccl-tests counts it).

    ZeRO paper section 7 (https://arxiv.org/abs/1910.02054): data parallel and stages 1-2 move
    2x the model (reduce-scatter of the gradients, all-gather of the updated weights; an
    all-reduce for stage 0); stage 3 moves 3x: the weights are all-gathered in the forward and
    again in the backward, and the gradients reduce-scattered. bf16 everywhere.
    """
    w, g = 2.0 * (p.total + (trainable if s.mode == "lora" else 0)), 2.0 * trainable
    if s.zero == 3:
        return [("all_gather", "weights, forward", w), ("all_gather", "weights, backward", w),
                ("reduce_scatter", "gradients", g)]
    if s.zero == 0:
        return [("all_reduce", "gradients", g)]
    return [("reduce_scatter", "gradients", g), ("all_gather", "updated weights", g)]


@dataclass(frozen=True)
class StepTime:
    flops_factor: int  # FLOPs per parameter per token: 6, 8 with full recomputation (LoRA: 4, 6)
    compute_s: float
    comm: list  # [(collective, what, bytes, seconds)]
    comm_s: float
    offload_s: float
    step_s: float  # the largest of the three: they can overlap at best
    bound: str  # "compute", "communication" or "host offload"


def step_time(p: Params, s: TrainSetup, trainable: int, matmul_flops_per_s: float,
              busbw_bytes_per_s: dict[str, float], host_link_bytes_per_s: float | None) -> StepTime:
    """Lower bound on one optimizer step (micro-batch s.batch x s.seq tokens per GPU).

    Compute: 6 x params x tokens (forward 2, backward 4; Kaplan et al. 2020,
    https://arxiv.org/abs/2001.08361), 8 x with full recomputation (one more forward); LoRA skips
    the frozen weights' gradients: 4 x (6 x with recomputation). MoE: the active parameters.
    Attention-score FLOPs are not counted. Collectives: S x factor(n) / busbw per operation,
    i.e. S / algbw with algbw = busbw / factor. Host offload: each GPU's gradient partition down
    and updated bf16 weights up over its link (plus the weights twice more with "params").
    """
    tokens = s.seq * s.batch
    factor = (6 if s.mode == "full" else 4) + (2 if s.checkpointing else 0)
    compute = factor * p.active * tokens / matmul_flops_per_s
    comm = []
    if s.gpus > 1:
        for op, what, size in traffic(p, s, trainable):
            comm.append((op, what, size, size * busbw_factor(op, s.gpus) / busbw_bytes_per_s[op]))
    comm_s = sum(c[3] for c in comm)
    offload_s = 0.0
    if s.offload != "none" and host_link_bytes_per_s:
        moved = 4.0 * trainable / s.gpus
        if s.offload == "params":
            moved += 2 * 2.0 * (p.total + (trainable if s.mode == "lora" else 0)) / s.gpus
        offload_s = moved / host_link_bytes_per_s
    parts = {"compute": compute, "communication": comm_s, "host offload": offload_s}
    bound = max(parts, key=parts.get)
    return StepTime(factor, compute, comm, comm_s, offload_s, parts[bound], bound)


# ---------------------------------------------------------------- inference

def kv_bytes_per_token(m: ModelConfig, element_bytes: float) -> float:
    """K and V of every layer: 2 x layers x kv_heads x head_dim x bytes."""
    return 2 * m.layers * m.kv_heads * m.head_dim * element_bytes


@dataclass(frozen=True)
class Inference:
    dtype: str
    weight_bytes: float  # whole model
    weight_bytes_per_gpu: float
    kv_bytes_per_token: float  # whole model
    kv_bytes_per_token_per_gpu: float
    usable_per_gpu: float
    kv_budget_per_gpu: float
    sequences: int  # concurrent sequences at the full context; 0: not even one
    decode_tps_one: float | None  # tokens/s of a single sequence, upper bound
    decode_tps_total: float | None  # tokens/s of all `sequences` together, upper bound
    prefill_s: float | None  # one sequence of `context` tokens, lower bound
    smallest_gpus: int | None


def inference(m: ModelConfig, p: Params, dtype: str, context: int, gpus: int, memory_bytes: float,
              memory_bytes_per_s: float, matmul_flops_per_s: float | None) -> Inference:
    """Tensor parallel over `gpus`: each GPU holds 1/gpus of the weights and of the KV heads
    (whole heads: ceil(kv_heads / gpus)). Decode is bandwidth-bound: each step reads the
    weights (one sequence of an MoE: the active experts only; a full batch: all of them) and the
    batch's KV cache, so tokens/s <= bandwidth / bytes per step. Prefill: 2 x params x tokens
    FLOPs (Kaplan et al. 2020) at the matmul rate of all GPUs. Tensor-parallel all-reduces,
    attention FLOPs and kernel efficiency are left out: these are bounds.
    """
    wb, kvb = WEIGHT_BYTES[dtype], KV_BYTES[dtype]
    weights = wb * p.total
    kv_tok = kv_bytes_per_token(m, kvb)
    kv_tok_gpu = kv_tok * math.ceil(m.kv_heads / gpus) / m.kv_heads
    usable = usable_bytes(memory_bytes)
    budget = usable - weights / gpus
    seqs = max(0, math.floor(budget / (kv_tok_gpu * context))) if budget > 0 else 0

    def step_s(batch: int, weight_params: int) -> float:
        return (wb * weight_params / gpus + batch * context * kv_tok_gpu) / memory_bytes_per_s

    one = 1 / step_s(1, p.active) if seqs else None
    total = seqs / step_s(seqs, p.total) if seqs else None
    prefill = 2 * p.active * context / (gpus * matmul_flops_per_s) if matmul_flops_per_s else None
    smallest = next((n for n in range(1, MAX_GPUS + 1)
                     if usable - weights / n >= kv_tok * math.ceil(m.kv_heads / n) / m.kv_heads * context), None)
    return Inference(dtype, weights, weights / gpus, kv_tok, kv_tok_gpu, usable, budget, seqs, one, total,
                     prefill, smallest)


# ---------------------------------------------------------------- small parsers

_CONTEXT = re.compile(r"^\s*(\d+)\s*([kK]?)\s*$")


def parse_context(text: str) -> int:
    """"32k" -> 32768 (k = 1024, as context lengths are quoted), "8192" -> 8192; ValueError otherwise."""
    match = _CONTEXT.match(str(text))
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a context length like 4096 or 32k")
    return int(match.group(1)) * (1024 if match.group(2) else 1)


def parse_count(text: str) -> tuple[float, float]:
    """A published count as printed, "70.6B" -> (70.6e9, 0.05e9): the value and half its last digit."""
    match = re.fullmatch(r"(\d+)(?:\.(\d+))?([MB])", text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a count like 70.6B")
    scale = {"M": 1e6, "B": 1e9}[match.group(3)]
    decimals = len(match.group(2) or "")
    return float(text.strip()[:-1]) * scale, 0.5 * 10.0 ** -decimals * scale
