"""Training-framework settings for a `cardbench size` setup: a DeepSpeed JSON config and FSDP settings.

Pure (no I/O): bench/size.py prints them or writes the JSON with --deepspeed-config FILE.
"""
from __future__ import annotations

from .sizing import ModelConfig, TrainSetup


def deepspeed_config(m: ModelConfig, s: TrainSetup) -> dict:
    """A DeepSpeed JSON config (keys as in https://www.deepspeed.ai/docs/config-json/ and
    deepspeed/runtime/zero/config.py). Bucket sizes are what Hugging Face's integration puts for
    "auto" (transformers/integrations/deepspeed.py, trainer_config_finalize): reduce_bucket_size
    h^2, stage3_prefetch_bucket_size 0.9 h^2, stage3_param_persistence_threshold 10 h; DeepSpeed
    types them as whole numbers."""
    h = m.hidden
    zero: dict = {"stage": s.zero, "overlap_comm": True, "contiguous_gradients": True, "reduce_bucket_size": h * h}
    if s.zero == 3:
        zero.update(stage3_prefetch_bucket_size=int(0.9 * h * h), stage3_param_persistence_threshold=10 * h,
                    stage3_gather_16bit_weights_on_model_save=True)
    if s.offload in ("optimizer", "params"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if s.offload == "params":
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    # train_batch_size is left out: DeepSpeed derives it (micro-batch x accumulation x world size).
    config = {"train_micro_batch_size_per_gpu": s.batch, "gradient_accumulation_steps": 1,
              "bf16": {"enabled": True}, "zero_optimization": zero}
    if s.checkpointing:
        # DeepSpeed's own checkpointing API reads this; with the Hugging Face Trainer set
        # gradient_checkpointing=True instead.
        config["activation_checkpointing"] = {
            "partition_activations": False, "cpu_checkpointing": False, "contiguous_memory_optimization": False,
            "number_checkpoints": m.layers, "synchronize_checkpoint_boundary": False, "profile": False}
    return config


FSDP_SHARDING = {3: "FULL_SHARD", 2: "SHARD_GRAD_OP", 1: "SHARD_GRAD_OP", 0: "NO_SHARD"}


def fsdp_settings(m: ModelConfig, s: TrainSetup) -> tuple[dict, list[str]]:
    """The same setup as Hugging Face Accelerate's fsdp_config keys, with what FSDP cannot match
    (https://huggingface.co/docs/accelerate/usage_guides/fsdp; torch FSDP CPUOffload moves
    parameters and gradients together: https://pytorch.org/docs/stable/fsdp.html)."""
    notes = []
    if s.zero == 1:
        notes.append("FSDP has no optimizer-only sharding: SHARD_GRAD_OP (ZeRO-2) is the nearest")
    if s.offload == "optimizer":
        notes.append("FSDP cannot offload the optimizer alone: fsdp_offload_params moves parameters and gradients too")
    settings = {
        "fsdp_sharding_strategy": FSDP_SHARDING[s.zero],
        "fsdp_offload_params": s.offload == "params",
        "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "fsdp_transformer_layer_cls_to_wrap": m.layer_class,
        "fsdp_backward_prefetch": "BACKWARD_PRE",
        "fsdp_activation_checkpointing": s.checkpointing,
        "fsdp_use_orig_params": s.mode == "lora",  # frozen and trainable parameters in one flat group
        "fsdp_state_dict_type": "SHARDED_STATE_DICT",
        "mixed_precision": "bf16",
    }
    return settings, notes
