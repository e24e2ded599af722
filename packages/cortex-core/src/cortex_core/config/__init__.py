"""Configuration: the loader and the structs of cortex.toml, models.toml and neuron.toml.

See :mod:`cortex_core.config.loader` for the rules every file follows.
"""

from cortex_core.config.gateway import (
    AuthOptions,
    EvictionOptions,
    GatewayConfig,
    GatewayOptions,
    ModelProfile,
    ModelsConfig,
    NeuronPeer,
    load_gateway_config,
)
from cortex_core.config.loader import ConfigError, ConfigStruct, FieldError, load, redacted
from cortex_core.config.neuron import DefaultModel, HarnessOptions, NeuronConfig, VllmOptions

__all__ = [
    "AuthOptions",
    "ConfigError",
    "ConfigStruct",
    "DefaultModel",
    "EvictionOptions",
    "FieldError",
    "GatewayConfig",
    "GatewayOptions",
    "HarnessOptions",
    "ModelProfile",
    "ModelsConfig",
    "NeuronConfig",
    "NeuronPeer",
    "VllmOptions",
    "load",
    "load_gateway_config",
    "redacted",
]
