"""The neuron's Prometheus metrics (``neuron_*``), in a registry of its own.

Counters and histograms move on events; the gauges (requests running and waiting, models
loaded) are read from the lifecycle at scrape time, so they cannot drift from the truth. Each
model's figures carry its id, so they stay apart with several engines in one process. vLLM's own
metrics are not exported: its Prometheus collectors are process-global, and with several
engines in one process only the last one's would survive.
"""

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from cortex_neuron.lifecycle import ModelState

__all__ = ["NeuronMetrics"]

_LOAD_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800)
_PHASE_BUCKETS = (0.01, 0.1, 0.5, *_LOAD_BUCKETS)


class NeuronMetrics:
    """Every ``neuron_*`` metric."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.loads = Counter(
            "neuron_model_loads",
            "Model loads, by result (ok or the error code).",
            ["model", "result"],
            registry=registry,
        )
        self.load_seconds = Histogram(
            "neuron_model_load_seconds",
            "Time from a load request to a serving engine.",
            ["model"],
            buckets=_LOAD_BUCKETS,
            registry=registry,
        )
        self.load_phase_seconds = Histogram(
            "neuron_load_seconds",
            "A model's load by phase: import (vLLM into the neuron, once), engine (its "
            "processes, weights, KV cache and warm-up), serving (vLLM's OpenAI layer).",
            ["model", "phase"],
            buckets=_PHASE_BUCKETS,
            registry=registry,
        )
        self.unloads = Counter(
            "neuron_model_unloads", "Model unloads.", ["model"], registry=registry
        )
        self.requests = Counter(
            "neuron_requests",
            "Inference requests answered, by route and HTTP status.",
            ["model", "route", "status"],
            registry=registry,
        )
        self.rejections = Counter(
            "neuron_requests_rejected",
            "Inference requests refused before reaching the engine, by reason.",
            ["model", "reason"],
            registry=registry,
        )
        self.engine_failures = Counter(
            "neuron_engine_failures",
            "Engines that died while serving.",
            ["model"],
            registry=registry,
        )

    def watch(self, states: Callable[[], Sequence["ModelState"]]) -> None:
        """Publish the gauges of the models ``states()`` returns at each scrape."""
        self.registry.register(_LifecycleCollector(states))


class _LifecycleCollector(Collector):
    def __init__(self, states: Callable[[], Sequence["ModelState"]]) -> None:
        self._states = states

    def collect(self) -> Iterator[Metric]:
        in_flight = GaugeMetricFamily(
            "neuron_requests_in_flight", "Requests the engine is running.", labels=["model"]
        )
        queued = GaugeMetricFamily(
            "neuron_requests_queued", "Requests waiting in the engine's queue.", labels=["model"]
        )
        loaded = GaugeMetricFamily(
            "neuron_model_loaded", "1 while the model serves, else 0.", labels=["model"]
        )
        unfinished = GaugeMetricFamily(
            "neuron_engine_unfinished_requests",
            "Requests the engine itself still holds (aborted ones leave it).",
            labels=["model"],
        )
        for state in self._states():
            gate = state.gate
            in_flight.add_metric([state.id], gate.in_flight if gate else 0)
            queued.add_metric([state.id], gate.queued if gate else 0)
            loaded.add_metric([state.id], 1 if state.status == "loaded" else 0)
            if state.engine is not None:
                unfinished.add_metric([state.id], state.engine.stats().unfinished_requests)
        yield from (in_flight, queued, loaded, unfinished)
