"""The gateway's Prometheus metrics (``cortex_*``), registered in a registry passed in.

Never the global registry: two apps in one process (tests) each get their own. Histograms have
explicit buckets sized for LLM serving (seconds to first token can include a cold load). The
per-request series are cached per (model, node), so the hot path does no label lookups. This
module records numbers; it decides nothing.
"""

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_asgi_app
from prometheus_client.metrics import MetricWrapperBase
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["UNKNOWN", "Metrics", "RequestSeries", "metrics_app"]

UNKNOWN = "-"
"""The label value for a model or node a request never got to (not a valid id or name)."""

_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
_TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
_TPS_BUCKETS = (1, 5, 10, 25, 50, 100, 200, 400, 800, 1600, 3200)
_LOAD_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)
_MIB = 1024 * 1024


@dataclass(eq=False)
class RequestSeries:
    """The children of every per-request metric for one (model, node)."""

    metrics: "Metrics"
    model: str
    node: str
    _statuses: dict[int, Counter] = field(default_factory=dict)

    def __post_init__(self) -> None:
        m, labels = self.metrics, (self.model, self.node)
        self.duration = m.request_duration.labels(*labels)
        self.ttft = m.time_to_first_token.labels(*labels)
        self.tokens_per_second = m.tokens_per_second.labels(*labels)
        self.prompt_tokens = m.prompt_tokens.labels(*labels)
        self.completion_tokens = m.completion_tokens.labels(*labels)
        self.in_flight = m.in_flight.labels(*labels)

    def finished(self, status: int, seconds: float) -> None:
        """Count one request answered with ``status`` after ``seconds``."""
        counter = self._statuses.get(status)
        if counter is None:
            counter = self._statuses[status] = self.metrics.requests.labels(
                self.model, self.node, str(status)
            )
        counter.inc()
        self.duration.observe(seconds)

    def failed(self, kind: str) -> None:
        """Count one error of ``kind`` (the error's code)."""
        self.metrics.request_errors.labels(self.model, self.node, kind).inc()

    def usage(self, prompt_tokens: int, completion_tokens: int) -> None:
        """Add the token counts the neuron reported in ``usage``.

        A broken neuron's negative count adds nothing: a counter never goes down, and the
        request is not failed for it.
        """
        self.prompt_tokens.inc(max(prompt_tokens, 0))
        self.completion_tokens.inc(max(completion_tokens, 0))


class Metrics:
    """Every ``cortex_*`` collector, registered into ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        request = ("model", "node")
        self.requests = Counter(
            "cortex_requests",
            "Inference requests answered, by HTTP status (499: the client went away).",
            (*request, "status"),
            registry=registry,
        )
        self.request_errors = Counter(
            "cortex_request_errors",
            "Inference requests that failed, by error code (also inside a started stream).",
            (*request, "kind"),
            registry=registry,
        )
        self.request_duration = Histogram(
            "cortex_request_duration_seconds",
            "From the request's arrival to the end of its answer (the end of the stream).",
            request,
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.time_to_first_token = Histogram(
            "cortex_time_to_first_token_seconds",
            "From the request's arrival to the first chunk carrying content or reasoning.",
            request,
            buckets=_TTFT_BUCKETS,
            registry=registry,
        )
        self.tokens_per_second = Histogram(
            "cortex_tokens_per_second",
            "Completion tokens per second over a stream's decode window (first token to end).",
            request,
            buckets=_TPS_BUCKETS,
            registry=registry,
        )
        self.prompt_tokens = Counter(
            "cortex_prompt_tokens",
            "Prompt tokens, from the neuron's usage.",
            request,
            registry=registry,
        )
        self.completion_tokens = Counter(
            "cortex_completion_tokens",
            "Completion tokens, from the neuron's usage.",
            request,
            registry=registry,
        )
        self.in_flight = Gauge(
            "cortex_in_flight_requests",
            "Requests this gateway has sent to a node and not finished.",
            request,
            registry=registry,
        )
        self.cold_starts = Counter(
            "cortex_cold_starts",
            "Loads this gateway made because a model was not loaded anywhere.",
            request,
            registry=registry,
        )
        self.model_load = Histogram(
            "cortex_model_load_seconds",
            "How long a successful load took, from the load call to the model serving.",
            request,
            buckets=_LOAD_BUCKETS,
            registry=registry,
        )
        self.evictions = Counter(
            "cortex_evictions",
            "Models unloaded by this gateway, by reason (lru, priority, cost, idle_ttl, drain, "
            "admin).",
            ("node", "reason"),
            registry=registry,
        )
        self.placement_refusals = Counter(
            "cortex_placement_refusals",
            "Requests placement could not serve, by reason (no_room, yielding, no_node, ...).",
            ("reason",),
            registry=registry,
        )
        self.queue_depth = Gauge(
            "cortex_queue_depth",
            "Requests waiting in this gateway's queue for the model (loading, or for room).",
            ("model",),
            registry=registry,
        )
        self.queue_wait = Histogram(
            "cortex_queue_wait_seconds",
            "How long requests waited in the queue before they were sent or refused.",
            buckets=_TTFT_BUCKETS,
            registry=registry,
        )
        self.model_resident = Gauge(
            "cortex_model_resident",
            "1 while the model is loaded on the node, as last polled.",
            ("node", "model"),
            registry=registry,
        )
        self.node_up = Gauge(
            "cortex_node_up", "1 while the node answers its polls.", ("node",), registry=registry
        )
        self.load_unload_cycles = Counter(
            "cortex_load_unload_cycles",
            "Models seen unloaded on the node after being loaded (memory fragmentation).",
            ("node",),
            registry=registry,
        )
        self.defrag_due = Gauge(
            "cortex_node_defrag_due",
            "1 once the node has had [eviction] defrag_after_cycles cycles since it started.",
            ("node",),
            registry=registry,
        )
        device = ("node", "device", "kind")
        self.device_memory_total = Gauge(
            "cortex_device_memory_total_bytes",
            "Device memory, from the neuron.",
            device,
            registry=registry,
        )
        self.device_memory_used = Gauge(
            "cortex_device_memory_used_bytes",
            "Device memory in use, from the neuron.",
            device,
            registry=registry,
        )
        self.device_memory_free = Gauge(
            "cortex_device_memory_free_bytes",
            "Device memory free, from the neuron.",
            device,
            registry=registry,
        )
        self.device_utilization = Gauge(
            "cortex_device_utilization_ratio",
            "Device utilisation (0-1), from the neuron.",
            device,
            registry=registry,
        )
        self._device_gauges: tuple[MetricWrapperBase, ...] = (
            self.device_memory_total,
            self.device_memory_used,
            self.device_memory_free,
            self.device_utilization,
        )
        self._series: dict[tuple[str, str], RequestSeries] = {}
        self._resident: dict[str, set[str]] = {}

    def series(self, model: str, node: str) -> RequestSeries:
        """The per-request children for ``(model, node)``, created once."""
        found = self._series.get((model, node))
        if found is None:
            found = self._series[(model, node)] = RequestSeries(self, model, node)
        return found

    def record_cycles(self, node: str, added: int, due: bool) -> None:
        """Count load/unload cycles seen on ``node``; ``due``: it reached defrag_after_cycles."""
        if added:
            self.load_unload_cycles.labels(node).inc(added)
        self.defrag_due.labels(node).set(due)

    def device(
        self, node: str, index: int, kind: str, used_mb: int, free_mb: int, util_pct: int | None
    ) -> None:
        """Republish one device's readings from a neuron's ``/health``."""
        labels = (node, str(index), kind)
        self.device_memory_total.labels(*labels).set((used_mb + free_mb) * _MIB)
        self.device_memory_used.labels(*labels).set(used_mb * _MIB)
        self.device_memory_free.labels(*labels).set(free_mb * _MIB)
        if util_pct is not None:
            self.device_utilization.labels(*labels).set(util_pct / 100)

    def residents(self, node: str, loaded: set[str]) -> None:
        """Set ``cortex_model_resident`` for ``node``: 1 for ``loaded``, 0 for models gone."""
        for model in self._resident.get(node, set()) - loaded:
            self.model_resident.labels(node, model).set(0)
        for model in loaded:
            self.model_resident.labels(node, model).set(1)
        self._resident[node] = self._resident.get(node, set()) | loaded

    def forget_devices(self, node: str) -> None:
        """Drop a down node's device series: stale readings would mislead."""
        for gauge in self._device_gauges:
            gauge.remove_by_labels({"node": node})


def metrics_app(registry: CollectorRegistry) -> ASGIApp:
    """The ASGI app of the metrics listener: ``GET /metrics`` in the Prometheus text format."""
    exposition = make_asgi_app(registry=registry)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # nothing to start or stop
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
        elif scope["path"] == "/metrics":
            await exposition(scope, receive, send)
        else:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"Not found: try /metrics\n"})

    return app
