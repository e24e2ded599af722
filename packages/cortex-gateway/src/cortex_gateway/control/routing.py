"""Carrying out placement: which node serves a request, and the operator's loads and unloads.

Every decision is :func:`~cortex_gateway.placement.policy.decide`'s, over a snapshot of the
fleet built for it; this module applies it. A ``Use`` resolves the model's endpoint on that
node (a node that says ``model_not_loaded`` is believed, and the decision asked again); a
``Load`` goes through :class:`~cortex_gateway.control.lifecycle.Lifecycle` (one load per node and
model, shared by every waiter), and a refused load is retried elsewhere as DESIGN §3's table
allows. Reads the fleet's state from memory; never waits on the poller.
"""

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cortex_core.errors import (
    CortexError,
    LoadFailedError,
    ModelNotFoundError,
    ModelNotLoadedError,
    NotFoundError,
    OutOfMemoryError,
    PermissionDeniedError,
    ServiceUnavailableError,
    ShuttingDownError,
)
from cortex_gateway.control.lifecycle import Lifecycle, load_spec
from cortex_gateway.fleet.catalogue import Catalogue
from cortex_gateway.fleet.node import Node
from cortex_gateway.placement.policy import Ask, Load, Refuse, Use, decide
from cortex_gateway.placement.snapshot import FleetSnapshot, Need
from cortex_gateway.upstream import ConnectError

__all__ = ["RETRY_AFTER_S", "Router", "Target"]

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 10.0
"""What a client is told to wait when no node has room now."""

_ELSEWHERE = (ModelNotFoundError, OutOfMemoryError, ShuttingDownError, ConnectError)
"""Load refusals after which another node may be tried (DESIGN §3); ``load_failed`` once."""


@dataclass(frozen=True)
class Target:
    """Where to send a request: the node and the model's inference base URL there."""

    node: Node
    url: str


class Router:
    """Routing and lifecycle decisions over ``nodes``."""

    def __init__(
        self,
        catalogue: Catalogue,
        nodes: Sequence[Node],
        lifecycle: Lifecycle,
        templates: dict[str, str],
        *,
        may_load: bool,
    ) -> None:
        self._catalogue = catalogue
        self._nodes = nodes
        self._by_name = {n.name: n for n in nodes}
        self._lifecycle = lifecycle
        self._templates = templates
        self._may_load = may_load

    def snapshot(self) -> FleetSnapshot:
        """The fleet as of now, for one decision."""
        profiles = self._catalogue.profiles
        return FleetSnapshot(
            nodes=tuple(n.state(profiles, self._lifecycle.loads_on(n)) for n in self._nodes),
            now=time.time(),
        )

    async def route(self, model_id: str, exclude: frozenset[str] = frozenset()) -> Target:
        """A node serving ``model_id`` (not one of ``exclude``), loading it if need be.

        Raises:
            CortexError: no node can serve it; the load's error when a load failed.
        """
        return await self._serve(Ask(model_id, self._need(model_id), exclude=exclude))

    def forget(self, target: Target, model_id: str) -> None:
        """The target's neuron answered ``model_not_loaded``: stop sending it there."""
        self._lifecycle.forget(target.node, model_id)

    async def load(self, model_id: str, node_name: str | None, *, force: bool) -> Node:
        """Operator load (``/admin/models/load``); ``force`` skips the free-memory check.

        Raises:
            PermissionDeniedError: this gateway does not load models.
            NotFoundError: no node is named ``node_name``.
            ServiceUnavailableError: the node is down, draining or has no room.
        """
        self._check_lifecycle()
        ask = Ask(model_id, self._need(model_id), node=node_name, force=force)
        return (await self._serve(ask)).node

    async def unload(
        self, model_id: str, node_name: str | None, *, force: bool, drain: bool = False
    ) -> list[str]:
        """Operator unload (``/admin/models/unload``) from one node, or from every node.

        ``drain`` waits for the requests in flight (the neuron's drain); ``force`` aborts them.

        Raises:
            ModelNotLoadedError: it is loaded on no (such) node.
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
        for node in nodes:
            await self._lifecycle.unload(node, model_id, force=force, drain=drain, reason="admin")
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
        return node

    def _need(self, model_id: str) -> Need:
        return Need.of(self._catalogue.profile(model_id))

    def _check_lifecycle(self) -> None:
        if not self._may_load:
            raise PermissionDeniedError(
                "This gateway does not load or unload models ([eviction] lifecycle = false); "
                "ask the gateway that does"
            )

    async def _serve(self, ask: Ask) -> Target:
        """Apply decisions until one serves ``ask``; ``last``: why a skipped node could not."""
        skip = set(ask.exclude)
        last: CortexError | None = None
        retried_failure = False
        while True:
            ask = Ask(ask.model, ask.need, ask.node, frozenset(skip), ask.force, self._may_load)
            decision = decide(self.snapshot(), ask)
            if isinstance(decision, Refuse):
                # A node already tried says best why it could not serve it.
                raise last if last is not None and ask.node is None else _refusal(decision)
            node = self._by_name[decision.node]
            try:
                if isinstance(decision, Use):
                    return Target(node, await self._lifecycle.endpoint(node, ask.model))
                return Target(node, await self._load_on(node, ask.model, decision))
            except ModelNotLoadedError:
                if not isinstance(decision, Use):
                    raise
                self._lifecycle.forget(node, ask.model)
                continue
            except _ELSEWHERE as exc:
                if ask.node is not None:
                    raise
                last = exc
            except LoadFailedError as exc:
                if retried_failure or ask.node is not None:
                    raise
                retried_failure, last = True, exc
            skip.add(node.name)

    async def _load_on(self, node: Node, model_id: str, decision: Load) -> str:
        profile = self._catalogue.profile(model_id)
        spec = load_spec(model_id, profile, self._templates.get(model_id), decision.devices)
        return await self._lifecycle.load(node, spec, Need.of(profile))


def _refusal(decision: Refuse) -> CortexError:
    if decision.reason == "no_node":
        return NotFoundError(decision.message, param="node")
    return ServiceUnavailableError(decision.message, retry_after=RETRY_AFTER_S)
