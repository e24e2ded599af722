"""The state every handler reads: one frozen :class:`AppContext`, through :func:`context`."""

import time
from dataclasses import dataclass, field

from starlette.requests import Request

from cortex_core.config import NeuronConfig
from cortex_neuron.activation import Activation
from cortex_neuron.devices import Devices
from cortex_neuron.engine.base import Warmer
from cortex_neuron.lifecycle import Lifecycle
from cortex_neuron.metrics import NeuronMetrics

__all__ = ["AppContext", "context"]


@dataclass(frozen=True)
class AppContext:
    """The neuron's long-lived parts, built once by :func:`cortex_neuron.app.build_context`."""

    config: NeuronConfig
    devices: Devices
    lifecycle: Lifecycle
    metrics: NeuronMetrics
    activation: Activation
    warmer: Warmer | None = None
    started: float = field(default_factory=time.monotonic)


def context(request: Request) -> AppContext:
    """The context of the app serving ``request``, from the lifespan's state."""
    ctx: AppContext = request.scope["state"]["neuron"]
    return ctx
