"""The neuron's configuration: neuron.toml (DESIGN §5).

Only the structs; the neuron applies its own policies (the ``engine_args`` allow-list) on top.
"""

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

import msgspec

from cortex_core.config.loader import ConfigStruct, FieldError
from cortex_core.ids import MODEL_ID_GRAMMAR, is_model_id
from cortex_core.wire.control import ModelSpec

__all__ = ["SPARE_MEMORY_MB", "DefaultModel", "HarnessOptions", "NeuronConfig", "VllmOptions"]

SPARE_MEMORY_MB = 2048
"""The warm spare's host memory by default: vLLM's engine core and worker, imported, idle."""


class VllmOptions(ConfigStruct, frozen=True):
    """``[harness.vllm]``: where models come from and the defaults under every load."""

    model_dirs: tuple[str, ...] = ("/var/lib/neuron/models",)
    hf_cache: str = ""
    allow_download: bool = False
    allow_trust_remote_code: bool = False
    cpu_memory_mb: Annotated[int, msgspec.Meta(ge=0)] = 0
    default_memory_mb: Annotated[int, msgspec.Meta(ge=0)] = 0
    engine_args: dict[str, Any] = msgspec.field(default_factory=dict)
    max_queued_per_model: Annotated[int, msgspec.Meta(ge=0)] = 64
    drain_timeout_s: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    spare_memory_mb: Annotated[int, msgspec.Meta(ge=0)] = SPARE_MEMORY_MB

    config_paths: ClassVar[tuple[str, ...]] = ("model_dirs", "hf_cache")


class HarnessOptions(ConfigStruct, frozen=True):
    """``[harness]``: one table per engine; vLLM is the only one."""

    vllm: VllmOptions = VllmOptions()


class DefaultModel(ModelSpec, frozen=True, forbid_unknown_fields=True):
    """One ``[[default_models]]`` entry: a load request made at start-up (a preload, not a pin)."""

    def __post_init__(self) -> None:
        if not is_model_id(self.model_id):
            raise FieldError(
                "model_id", f"{self.model_id!r} is not a valid model id: {MODEL_ID_GRAMMAR}"
            )


class NeuronConfig(ConfigStruct, frozen=True):
    """neuron.toml."""

    host: str = "0.0.0.0"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 13131
    auth_token: str = ""
    auth_token_file: str = ""
    harness: HarnessOptions = HarnessOptions()
    default_models: tuple[DefaultModel, ...] = ()

    config_paths: ClassVar[tuple[str, ...]] = ("auth_token_file",)
    config_secret_files: ClassVar[Mapping[str, str]] = {"auth_token_file": "auth_token"}
    config_secrets: ClassVar[tuple[str, ...]] = ("auth_token",)
