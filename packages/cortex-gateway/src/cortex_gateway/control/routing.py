"""Which node serves a request: a loaded replica, else a load under way, else a new load.

Among the healthy nodes where the model is loaded, the one with the fewest requests in flight
wins (this gateway's live count, then the neuron's). Failing that, a load: joined where one is
under way, else placed by :func:`~cortex_gateway.placement.policy.first_fit`. A load refused by a
neuron is retried elsewhere as DESIGN §3's table allows. Reads the fleet's state from memory;
never waits on the poller. Operator loads and unloads (``/admin``) go through the same code.
"""

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
from cortex_gateway.placement.policy import Candidate, Need, Placement, first_fit, pick_devices
from cortex_gateway.upstream import ConnectError

__all__ = ["RETRY_AFTER_S", "Router", "Target"]

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

    async def route(
        self, model_id: str, exclude: frozenset[str] = frozenset(), *, force: bool = False
    ) -> Target:
        """A node serving ``model_id`` (not one of ``exclude``), loading it if need be.

        ``force`` loads on the first node that knows the model when none seems to have room.

        Raises:
            CortexError: no node can serve it; the load's error when a load failed.
        """
        skip = set(exclude)
        unreachable: ConnectError | None = None
        while loaded := [
            n for n in self._nodes
            if n.healthy and n.name not in skip and n.status(model_id) == "loaded"
        ]:  # fmt: skip
            node = min(
                loaded, key=lambda n: (n.active.get(model_id, 0), n.models[model_id].in_flight)
            )
            try:
                return Target(node, await self._lifecycle.endpoint(node, model_id))
            except ModelNotLoadedError:
                self._lifecycle.forget(node, model_id)
            except ConnectError as exc:
                skip.add(node.name)
                unreachable = exc
        if not self._may_load:
            raise ServiceUnavailableError(
                f"{model_id} is not loaded on any node, and this gateway does not load models "
                "([eviction] lifecycle = false)",
                retry_after=RETRY_AFTER_S,
            )
        return await self._load_somewhere(model_id, skip, force=force, last=unreachable)

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
        if node_name is None:
            return (await self.route(model_id, force=force)).node
        node = self._node(node_name)
        if node.status(model_id) == "loaded":
            return node
        need = Need.of(self._catalogue.profile(model_id))
        devices = pick_devices(node.rooms(), need, free=True)
        if devices is None and not force:
            raise ServiceUnavailableError(
                f"node {node.name} has no room for {model_id} now ({need.memory_mb} MiB)",
                retry_after=RETRY_AFTER_S,
            )
        await self._load_on(node, model_id, devices or None, need)
        return node

    async def unload(self, model_id: str, node_name: str | None, *, force: bool) -> list[str]:
        """Operator unload (``/admin/models/unload``) from one node, or from every node.

        Raises:
            ModelNotLoadedError: it is loaded on no (such) node.
            CortexError: the neuron's refusal (409 ``model_busy`` unless ``force``).
        """
        self._check_lifecycle()
        if node_name is not None:
            nodes = [self._node(node_name)]
        else:
            nodes = [n for n in self._nodes if n.up and n.status(model_id) in ("loaded", "loading")]
        if not nodes:
            raise ModelNotLoadedError(f"{model_id} is not loaded on any node", param="model")
        for node in nodes:
            await self._lifecycle.unload(node, model_id, force=force, reason="admin")
        return [n.name for n in nodes]

    def _check_lifecycle(self) -> None:
        if not self._may_load:
            raise PermissionDeniedError(
                "This gateway does not load or unload models ([eviction] lifecycle = false); "
                "ask the gateway that does"
            )

    def _node(self, name: str) -> Node:
        node = self._by_name.get(name)
        if node is None:
            raise NotFoundError(f"No node is named {name!r}", param="node")
        if not node.healthy:
            state = "draining" if node.up else "down"
            raise ServiceUnavailableError(f"node {name} is {state}", retry_after=RETRY_AFTER_S)
        return node

    async def _load_somewhere(
        self, model_id: str, skip: set[str], *, force: bool, last: CortexError | None = None
    ) -> Target:
        """Load where it fits; ``last``: why the nodes already skipped could not serve it."""
        need = Need.of(self._catalogue.profile(model_id))
        retried_failure = False
        while (placement := self._place(model_id, need, skip, force=force)) is not None:
            node = self._by_name[placement.node]
            try:
                return Target(node, await self._load_on(node, model_id, placement.devices, need))
            except _ELSEWHERE as exc:
                last = exc
            except LoadFailedError as exc:
                if retried_failure:
                    raise
                retried_failure, last = True, exc
            skip.add(node.name)
        if last is not None:
            raise last
        raise ServiceUnavailableError(
            f"No node has room for {model_id} now"
            + (f" ({need.memory_mb} MiB)" if need.memory_mb else ""),
            retry_after=RETRY_AFTER_S,
        )

    def _place(self, model_id: str, need: Need, skip: set[str], *, force: bool) -> Placement | None:
        nodes = [
            n for n in self._nodes
            if n.healthy and n.name not in skip and n.status(model_id) is not None
        ]  # fmt: skip
        for node in nodes:
            if self._lifecycle.loading(node, model_id) or node.status(model_id) == "loading":
                return Placement(node.name, None)  # join it: the neuron shares one load
        placement = first_fit([Candidate(n.name, n.rooms()) for n in nodes], need)
        if placement is None and force and nodes:
            return Placement(nodes[0].name, None)
        return placement

    async def _load_on(
        self, node: Node, model_id: str, devices: tuple[int, ...] | None, need: Need
    ) -> str:
        profile = self._catalogue.profile(model_id)
        spec = load_spec(model_id, profile, self._templates.get(model_id), devices)
        return await self._lifecycle.load(node, spec, need)
