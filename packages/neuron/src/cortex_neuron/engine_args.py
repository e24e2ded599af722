"""Which vLLM engine arguments a load may set: the allow-list (DESIGN §3, "engine_args").

None of the allowed arguments names a path or runs the model's own code; ``trust_remote_code``
is allowed only where neuron.toml says ``allow_trust_remote_code``. Checked for every load and,
at ``neuron config check``, for what neuron.toml itself sets.
"""

from typing import Any

from cortex_core.config import NeuronConfig, VllmOptions

__all__ = ["ENGINE_ARGS_ALLOWED", "check_engine_args", "refused_args"]

ENGINE_ARGS_ALLOWED = frozenset(
    {
        "block_size",
        "compilation_config",
        "cpu_offload_gb",
        "data_parallel_size",
        "disable_custom_all_reduce",
        "disable_sliding_window",
        "distributed_executor_backend",
        "dtype",
        "enable_chunked_prefill",
        "enable_expert_parallel",
        "enable_prefix_caching",
        "enforce_eager",
        "generation_config",
        "kv_cache_dtype",
        "limit_mm_per_prompt",
        "max_logprobs",
        "max_num_batched_tokens",
        "max_num_seqs",
        "pipeline_parallel_size",
        "seed",
        "swap_space",
    }
)
"""vLLM engine arguments a load may set: none names a path or runs the model's own code."""

_TRUST_REMOTE_CODE = "trust_remote_code"


def check_engine_args(config: NeuronConfig) -> list[str]:
    """What neuron.toml asks of the engine that the allow-list refuses, one line per place."""
    places = [("harness.vllm.engine_args", config.harness.vllm.engine_args)]
    places += [
        (f"default_models[{i}].engine_args", m.engine_args)
        for i, m in enumerate(config.default_models)
    ]
    found = [(where, refused_args(args, config.harness.vllm)) for where, args in places]
    return [f"{where}: {refusal}" for where, refusal in found if refusal]


def refused_args(args: dict[str, Any], options: VllmOptions) -> str | None:
    """Why ``args`` cannot be passed to the engine, or ``None`` when they can."""
    allowed = ENGINE_ARGS_ALLOWED | (
        {_TRUST_REMOTE_CODE} if options.allow_trust_remote_code else set()
    )
    refused = sorted(args.keys() - allowed)
    if not refused:
        return None
    return f"engine_args {refused} are not allowed; allowed: {sorted(allowed)}"
