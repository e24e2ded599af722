"""Carrying out placement: which node serves a request, and the operator's loads and unloads.

Every decision is :func:`~cortex_gateway.placement.policy.decide`'s, over a snapshot of the
fleet built for it; this module applies it, as one sequence. A ``Use`` resolves the model's
endpoint on that node (a node that says ``model_not_loaded`` is believed, and the decision asked
again). A ``Load`` goes through :class:`~cortex_gateway.control.lifecycle.Lifecycle`: one load
per node and model, shared by every waiter, after its victims are unloaded (all at once) and
the node reports their memory free. A victim that turned out busy (409) means the snapshot was
stale: decide again, never force. A load refused ``out_of_memory`` is decided again once with
the node's memory read afresh (evicting if it can), then elsewhere; other refusals move on as
DESIGN §3's table allows. A request that must wait (its model loading, or no room until busy
models go idle) waits in the model's :class:`~cortex_gateway.control.queue.Queue`, bounded.
Reads the fleet's state from memory; never waits on the poller.
"""

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cortex_core.config import EvictionOptions
from cortex_core.errors import (
    CortexError,
    LoadFailedError,
    ModelBusyError,
    ModelNotFoundError,
    ModelNotLoadedError,
    NotFoundError,
    OutOfMemoryError,
    PermissionDeniedError,
    ServiceUnavailableError,
    ShuttingDownError,
)
from cortex_gateway.control.lifecycle import Lifecycle, load_spec
from cortex_gateway.control.queue import Entry, Queue
from cortex_gateway.fleet.catalogue import Catalogue
from cortex_gateway.fleet.node import Node
from cortex_gateway.metrics import Metrics
from cortex_gateway.placement.policy import Ask, Decision, Load, Refuse, Use, decide, in_the_way
from cortex_gateway.placement.snapshot import FleetSnapshot, Need
from cortex_gateway.upstream import ConnectError

__all__ = ["RETRY_AFTER_S", "Router", "Target"]

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 10.0
"""What a client is told to wait when no node has room now."""

_ELSEWHERE = (ModelNotFoundError, ShuttingDownError, ConnectError)
"""Load refusals after which another node may be tried (DESIGN §3); ``load_failed`` once,
``out_of_memory`` after one more decision on the same node."""

_STALE_LIMIT = 5
"""Decisions in a row that may meet a busy victim before the request gives up."""


@dataclass(frozen=True)
class Target:
    """Where to send a request: the node, the model's base URL there, what made room for it."""

    node: Node
    url: str
    evicted: tuple[str, ...] = ()


class Router:
    """Routing and lifecycle decisions over ``nodes``."""

    def __init__(
        self,
        catalogue: Catalogue,
        nodes: Sequence[Node],
        lifecycle: Lifecycle,
        queue: Queue,
        metrics: Metrics,
        templates: dict[str, str],
        eviction: EvictionOptions,
    ) -> None:
        self._catalogue = catalogue
        self._nodes = nodes
        self._by_name = {n.name: n for n in nodes}
        self._lifecycle = lifecycle
        self._queue = queue
        self._metrics = metrics
        self._templates = templates
        self._eviction = eviction

    @property
    def may_load(self) -> bool:
        """Whether this gateway loads and unloads models (``[eviction] lifecycle``)."""
        return self._eviction.lifecycle

    def snapshot(self, only: str | None = None) -> FleetSnapshot:
        """The fleet as of now, for one decision; models in a passed-over queue's way yield.

        ``only``: just that model's states on each node, when no queue has been passed over:
        enough to decide whether a loaded replica serves it (the request path's common case,
        cheap however large the fleet).
        """
        profiles, waiting = self._catalogue.profiles, self._queue.waiting()
        starved = self._queue.passed_over()
        part = only if not starved else None
        fleet = FleetSnapshot(
            nodes=tuple(
                n.state(profiles, self._lifecycle.loads_on(n), waiting, only=part)
                for n in self._nodes
            ),
            now=time.time(),
        )
        yielding: set[tuple[str, str]] = set()
        for model in starved:
            yielding |= in_the_way(fleet, self._ask(model))
        return fleet.yielding(yielding) if yielding else fleet

    def need(self, model_id: str) -> Need:
        """What ``model_id`` needs: models.toml's, with the footprint a load measured winning."""
        need = Need.of(self._catalogue.profile(model_id))
        measured = [
            r.footprint_mb
            for n in self._nodes
            if (r := n.residents.get(model_id)) is not None and r.footprint_mb
        ]
        if measured:
            return Need(max(measured), need.devices, need.device_total_mb)
        return need

    async def route(self, model_id: str, exclude: frozenset[str] = frozenset()) -> Target:
        """A node serving ``model_id`` (not one of ``exclude``), loading it if need be.

        Raises:
            CortexError: no node can serve it; the load's error when a load failed; 429 when
                its queue is full; 503 when it waited for room too long.
        """
        return await self._serve(self._ask(model_id, exclude=exclude, need=False))

    def forget(self, target: Target, model_id: str) -> None:
        """The target's neuron answered ``model_not_loaded``: stop sending it there."""
        self._lifecycle.forget(target.node, model_id)

    async def load(self, model_id: str, node_name: str | None, *, force: bool) -> Target:
        """Operator load (``/admin/models/load``); ``force`` skips the free-memory check.

        Raises:
            PermissionDeniedError: this gateway does not load models.
            NotFoundError: no node is named ``node_name``.
            ServiceUnavailableError: the node is down, draining or has no room.
        """
        self._check_lifecycle()
        return await self._serve(self._ask(model_id, node=node_name, force=force), wait=False)

    async def unload(
        self, model_id: str, node_name: str | None, *, force: bool, drain: bool = False
    ) -> list[str]:
        """Operator unload (``/admin/models/unload``) from one node, or from every node.

        ``drain`` waits for the requests in flight (the neuron's drain); ``force`` aborts them.

        Raises:
            ModelNotLoadedError: it is loaded on no (such) node.
            ModelBusyError: it is pinned there (unless ``force``).
            CortexError: the neuron's refusal (409 ``model_busy`` unless ``force``).
        """
        self._check_lifecycle()
        if node_name is not None:
            node = self._by_name.get(node_name)
            if node is None:
                raise NotFoundError(f"No node is named {node_name!r}", param="node")
            if not node.healthy:
                raise _refusal(Refuse("node_down", f"node {node.name} is down or draining"))
            nodes = [node]
        else:
            nodes = [n for n in self._nodes if n.up and n.status(model_id) in ("loaded", "loading")]
        if not nodes:
            raise ModelNotLoadedError(f"{model_id} is not loaded on any node", param="model")
        profile = self._catalogue.profile(model_id)
        for node in nodes:
            if not force and profile is not None and node.name in profile.pinned_on:
                raise ModelBusyError(
                    f"{model_id} is pinned on {node.name}; unload it with force",
                    code="model_pinned",
                )
        for node in nodes:
            await self._lifecycle.unload(node, model_id, force=force, drain=drain, reason="admin")
        self._queue.changed()
        return [n.name for n in nodes]

    def steer(self, node_name: str, *, cordon: bool, drain: bool) -> Node:
        """Cordon a node (no new loads), drain it (and unload its models as they go idle), or not.

        ``cordon`` and ``drain`` both false is an uncordon: both are undone.

        Raises:
            PermissionDeniedError: this gateway does not load or unload models.
            NotFoundError: no node is named ``node_name``.
        """
        self._check_lifecycle()
        node = self._by_name.get(node_name)
        if node is None:
            raise NotFoundError(f"No node is named {node_name!r}", param="node")
        node.cordoned, node.drained = cordon, drain
        logger.info(
            "node %s %s", node.name, "drained" if drain else "cordoned" if cordon else "uncordoned"
        )
        self._queue.changed()
        return node

    def _ask(
        self,
        model_id: str,
        *,
        node: str | None = None,
        exclude: frozenset[str] = frozenset(),
        force: bool = False,
        need: bool = True,
    ) -> Ask:
        """The ask for ``model_id``; without ``need`` its footprint is left for later."""
        return Ask(
            model_id,
            self.need(model_id) if need else Need(),
            node=node,
            exclude=exclude,
            force=force,
            may_load=self.may_load,
            strategy=self._eviction.strategy,
        )

    def _check_lifecycle(self) -> None:
        if not self.may_load:
            raise PermissionDeniedError(
                "This gateway does not load or unload models ([eviction] lifecycle = false); "
                "ask the gateway that does"
            )

    async def _serve(self, ask: Ask, *, wait: bool = True) -> Target:
        # The common case first, and cheaply: a loaded replica reads no memory and no queue.
        decision = decide(self.snapshot(only=ask.model), ask)
        if isinstance(decision, Use):
            try:
                node = self._by_name[decision.node]
                return Target(node, await self._lifecycle.endpoint(node, ask.model))
            except (ModelNotLoadedError, ConnectError):
                pass  # decided again below, in the queue
        async with self._queue.entry(ask.model) as entry:
            return await self._apply(ask, entry if wait else None)

    async def _apply(self, ask: Ask, entry: Entry | None) -> Target:
        """Apply decisions until one serves ``ask``; ``entry``: wait there when told to."""
        skip = set(ask.exclude)
        last: CortexError | None = None
        retried_failure = False
        oom_once: set[str] = set()
        stale = 0
        while True:
            ask = dataclasses.replace(ask, need=self.need(ask.model), exclude=frozenset(skip))
            decision = decide(self.snapshot(), ask)
            if isinstance(decision, Refuse):
                self._metrics.placement_refusals.labels(decision.reason).inc()
                if decision.transient and entry is not None and last is None:
                    await entry.wait(decision.message)
                    continue
                # A node already tried says best why it could not serve it.
                raise last if last is not None and ask.node is None else _refusal(decision)
            node = self._by_name[decision.node]
            try:
                return await self._carry_out(node, ask, decision)
            except ModelNotLoadedError:
                if not isinstance(decision, Use):
                    raise
                self._lifecycle.forget(node, ask.model)
                continue
            except ModelBusyError:
                stale += 1  # a victim had requests after all: the snapshot was stale
                if stale >= _STALE_LIMIT:
                    raise
                continue
            except OutOfMemoryError as exc:
                if node.name not in oom_once:
                    oom_once.add(node.name)
                    await self._refresh(node)  # decide again from its real free memory
                    continue
                if ask.node is not None:
                    raise
                last = exc
            except _ELSEWHERE as exc:
                if ask.node is not None:
                    raise
                last = exc
            except LoadFailedError as exc:
                if retried_failure or ask.node is not None:
                    raise
                retried_failure, last = True, exc
            skip.add(node.name)

    async def _carry_out(self, node: Node, ask: Ask, decision: Decision) -> Target:
        if isinstance(decision, Use):
            return Target(node, await self._lifecycle.endpoint(node, ask.model))
        assert isinstance(decision, Load)
        profile = self._catalogue.profile(ask.model)
        spec = load_spec(ask.model, profile, self._templates.get(ask.model), decision.devices)
        try:
            url = await self._lifecycle.load(
                node, spec, ask.need, decision.evict, reason=self._eviction.strategy
            )
        finally:
            self._queue.changed()
        return Target(node, url, decision.evict)

    async def _refresh(self, node: Node) -> None:
        try:
            await self._lifecycle.refresh(node)
        except CortexError as exc:
            logger.info("could not read %s's memory afresh: %s", node.name, exc.message)


def _refusal(decision: Refuse) -> CortexError:
    if decision.reason == "no_node":
        return NotFoundError(decision.message, param="node")
    return ServiceUnavailableError(decision.message, retry_after=RETRY_AFTER_S)
