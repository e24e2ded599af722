"""The gateway's configuration: cortex.toml and the models.toml it points to (DESIGN §5).

Only the structs and the checks that need no network; the gateway decides what to do with them.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

import msgspec

from cortex_core.config.loader import ConfigError, ConfigStruct, FieldError, load
from cortex_core.ids import MODEL_ID_GRAMMAR, is_model_id

__all__ = [
    "AuthOptions",
    "EvictionOptions",
    "GatewayConfig",
    "GatewayOptions",
    "ModelProfile",
    "ModelsConfig",
    "NeuronPeer",
    "load_gateway_config",
]

Seconds = Annotated[float, msgspec.Meta(gt=0)]
Count = Annotated[int, msgspec.Meta(ge=0)]
MiB = Annotated[int, msgspec.Meta(gt=0)]


def _check_address(field: str, value: str) -> None:
    """Refuse a listen address that is not ``HOST:PORT`` (IPv6 hosts in brackets)."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise FieldError(field, f"expected HOST:PORT, got {value!r}")


class GatewayOptions(ConfigStruct, frozen=True):
    """``[gateway]``: listeners, polling and the time bounds of requests."""

    listen: str = "0.0.0.0:31313"
    metrics_listen: str = "0.0.0.0:31314"
    poll_interval_s: Seconds = 2.0
    load_timeout_s: Seconds = 1800.0
    idle_timeout_s: Seconds = 300.0
    request_timeout_s: Seconds = 1800.0
    max_body_bytes: MiB = 33554432
    queue_per_model: Annotated[int, msgspec.Meta(ge=1)] = 256
    queue_timeout_s: Seconds = 300.0

    def __post_init__(self) -> None:
        _check_address("listen", self.listen)
        _check_address("metrics_listen", self.metrics_listen)


class EvictionOptions(ConfigStruct, frozen=True):
    """``[eviction]``: which idle models make room, and whether this gateway may load at all."""

    strategy: Literal["lru", "priority", "cost"] = "lru"
    defrag_after_cycles: Count = 50
    idle_ttl_s: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    max_pass_over_s: Seconds = 30.0
    lifecycle: bool = True


class AuthOptions(ConfigStruct, frozen=True):
    """``[auth]``: client and admin keys; empty lists leave the routes open (DESIGN §4)."""

    api_keys: tuple[str, ...] = ()
    admin_keys: tuple[str, ...] = ()
    api_keys_file: str = ""
    admin_keys_file: str = ""

    config_paths: ClassVar[tuple[str, ...]] = ("api_keys_file", "admin_keys_file")
    config_secret_files: ClassVar[Mapping[str, str]] = {
        "api_keys_file": "api_keys",
        "admin_keys_file": "admin_keys",
    }
    config_secrets: ClassVar[tuple[str, ...]] = ("api_keys", "admin_keys")


class NeuronPeer(ConfigStruct, frozen=True):
    """One ``[[neurons]]`` entry: a neuron this gateway polls and routes to."""

    name: str
    endpoint: str
    token: str = ""
    token_file: str = ""

    config_paths: ClassVar[tuple[str, ...]] = ("token_file",)
    config_secret_files: ClassVar[Mapping[str, str]] = {"token_file": "token"}
    config_secrets: ClassVar[tuple[str, ...]] = ("token",)

    def __post_init__(self) -> None:
        if not is_model_id(self.name) or "/" in self.name:
            raise FieldError("name", f"{self.name!r} is not a valid node name")
        url = urlsplit(self.endpoint)
        if url.scheme not in ("http", "https") or not url.hostname or url.path not in ("", "/"):
            raise FieldError("endpoint", f"expected http://HOST:PORT, got {self.endpoint!r}")

    @property
    def base_url(self) -> str:
        """The endpoint without a trailing slash."""
        return self.endpoint.rstrip("/")


class GatewayConfig(ConfigStruct, frozen=True):
    """cortex.toml."""

    models_config: str = ""
    gateway: GatewayOptions = GatewayOptions()
    eviction: EvictionOptions = EvictionOptions()
    auth: AuthOptions = AuthOptions()
    neurons: tuple[NeuronPeer, ...] = ()

    config_paths: ClassVar[tuple[str, ...]] = ("models_config",)

    def __post_init__(self) -> None:
        names = [n.name for n in self.neurons]
        for name in names:
            if names.count(name) > 1:
                raise FieldError("neurons", f"two neurons are named {name!r}")


class ModelProfile(ConfigStruct, frozen=True):
    """One ``[[models]]`` entry: how the fleet loads and serves a model.

    Empty strings mean "not set" (TOML has no null): no tool parser, the model's own template.
    """

    id: str
    harness: Literal["vllm"] = "vllm"
    vram_mb: MiB | None = None
    min_devices: Annotated[int, msgspec.Meta(ge=1)] = 1
    min_device_vram_mb: Count = 0
    pinned_on: tuple[str, ...] = ()
    priority: int = 100
    aliases: tuple[str, ...] = ()
    max_model_len: MiB | None = None
    tool_call_parser: str = ""
    reasoning_parser: str = ""
    chat_template: str = ""
    engine_args: dict[str, Any] = msgspec.field(default_factory=dict)

    config_paths: ClassVar[tuple[str, ...]] = ("chat_template",)

    def __post_init__(self) -> None:
        if not is_model_id(self.id):
            raise FieldError("id", f"{self.id!r} is not a valid model id: {MODEL_ID_GRAMMAR}")
        for alias in self.aliases:
            if not is_model_id(alias):
                raise FieldError("aliases", f"{alias!r} is not a valid model id")


class ModelsConfig(ConfigStruct, frozen=True):
    """models.toml."""

    models: tuple[ModelProfile, ...] = ()

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for model in self.models:
            for name in (model.id, *model.aliases):
                if name in seen:
                    raise FieldError("models", f"{name!r} names two models (ids and aliases)")
                seen.add(name)


def load_gateway_config(
    path: str | Path | None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[GatewayConfig, ModelsConfig]:
    """Load cortex.toml (``CORTEX_`` environment overrides) and the models.toml it names.

    Raises:
        ConfigError: either file is wrong, or a model is pinned on a neuron that is not listed.
    """
    config = load(GatewayConfig, path, env_prefix="CORTEX", environ=environ, overrides=overrides)
    if not config.models_config:
        return config, ModelsConfig()
    models = load(ModelsConfig, config.models_config)
    nodes = {n.name for n in config.neurons}
    for i, model in enumerate(models.models):
        for node in model.pinned_on:
            if node not in nodes:
                raise ConfigError(
                    config.models_config,
                    f"{node!r} is not a neuron of {path or 'the gateway config'}",
                    f"models[{i}].pinned_on",
                )
    return config, models
