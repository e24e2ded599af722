"""Test helpers: a fake neuron, and the gateway served in-process in front of it.

Used by this package's tests, the repository's integration tests and the benchmarks; nothing
here runs in production.
"""

from cortex_gateway.testing.harness import (
    RunningGateway,
    eventually,
    fleet_config,
    running_gateway,
    scrape,
)
from cortex_gateway.testing.models import FakeModel
from cortex_gateway.testing.neuron import FakeNeuron, Recorded
from cortex_gateway.testing.replies import PROMPT_TOKENS

__all__ = [
    "PROMPT_TOKENS",
    "FakeModel",
    "FakeNeuron",
    "Recorded",
    "RunningGateway",
    "eventually",
    "fleet_config",
    "running_gateway",
    "scrape",
]
