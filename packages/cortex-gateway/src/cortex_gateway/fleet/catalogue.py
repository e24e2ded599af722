"""Which models the fleet can serve now (DESIGN §4 "Servable models"), and what names mean.

A model is servable when a healthy node has it loaded or loading, or knows it (``available``,
``failed``, ``unloading``: loadable) and could hold its footprint in its devices' total memory.
models.toml adds footprints and aliases; a model it does not list but a healthy node reports is
servable too. ``/v1/models`` and the router both ask this module, so they always agree. It reads
the fleet's state and never changes it.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from cortex_core.config import ModelProfile, ModelsConfig
from cortex_core.errors import ModelNotFoundError
from cortex_core.ids import check_model_id
from cortex_core.wire.control import ModelStatus
from cortex_core.wire.models import ModelCard, ModelList, ModelLocation
from cortex_gateway.fleet.node import Node
from cortex_gateway.placement.policy import fits
from cortex_gateway.placement.snapshot import DeviceRoom, Need

__all__ = ["Catalogue", "Seen"]


@dataclass
class Seen:
    """What :meth:`Catalogue.survey` found of one model."""

    locations: list[ModelLocation] = field(default_factory=list)
    """The healthy nodes that know it, and its state on each."""
    servable: bool = False
    max_model_len: int | None = None
    """A loaded copy's, else models.toml's."""


class Catalogue:
    """The servable models of ``nodes``, under the names of ``models``."""

    def __init__(self, models: ModelsConfig, nodes: Sequence[Node]) -> None:
        self._profiles = {p.id: p for p in models.models}
        self._aliases = {alias: p.id for p in models.models for alias in p.aliases}
        self._nodes = nodes

    @property
    def profiles(self) -> Mapping[str, ModelProfile]:
        """models.toml's entries by id."""
        return self._profiles

    def profile(self, model_id: str) -> ModelProfile | None:
        """The models.toml entry of ``model_id``, if it has one."""
        return self._profiles.get(model_id)

    def aliases(self, model_id: str) -> tuple[str, ...]:
        """The other names of ``model_id``."""
        profile = self._profiles.get(model_id)
        return () if profile is None else profile.aliases

    def canonical(self, name: str) -> str:
        """The model id ``name`` means (an alias's target), servable or not.

        Raises:
            InvalidModelIdError: ``name`` does not follow the model-id grammar.
        """
        return self._aliases.get(check_model_id(name), name)

    def resolve(self, name: str) -> str:
        """The model id ``name`` means, if the fleet can serve it.

        Raises:
            InvalidModelIdError: ``name`` does not follow the model-id grammar.
            ModelNotFoundError: no healthy node can serve it now.
        """
        model_id = self.canonical(name)
        if not self.servable(model_id):
            raise ModelNotFoundError(
                f"The model {name!r} does not exist or no node can serve it now", param="model"
            )
        return model_id

    def servable_on(self, node: Node, model_id: str) -> bool:
        """Whether ``node`` can serve ``model_id`` now, loaded or after a load."""
        return node.healthy and self._servable(node, model_id, node.status(model_id), node.rooms)

    def servable(self, model_id: str) -> bool:
        """Whether some healthy node can serve ``model_id`` now."""
        return any(self.servable_on(node, model_id) for node in self._nodes)

    def survey(self) -> dict[str, Seen]:
        """Every model models.toml or a healthy node names, models.toml's first.

        Where each is, whether it is servable, its context: one pass over the fleet, each
        node's rooms reckoned once (asking model by model was 25 ms a ``/v1/models`` at 100
        nodes of 10 models, benchmarks/fleet.py).
        """
        seen = {model_id: Seen() for model_id in self._profiles}
        for node in self._nodes:
            if not node.healthy:
                continue
            rooms = _once(node.rooms)
            for model_id, resident in sorted(node.residents.items()):
                info = resident.info
                if info is None:
                    continue
                entry = seen.get(model_id)
                if entry is None:
                    entry = seen[model_id] = Seen()
                status = info.status
                entry.locations.append(ModelLocation(node=node.name, status=status))
                if status == "loaded" and entry.max_model_len is None:
                    entry.max_model_len = info.max_model_len
                if not entry.servable:
                    entry.servable = self._servable(node, model_id, status, rooms)
        for model_id, entry in seen.items():
            profile = self._profiles.get(model_id)
            if entry.max_model_len is None and profile is not None:
                entry.max_model_len = profile.max_model_len
        return seen

    def _servable(
        self,
        node: Node,
        model_id: str,
        status: ModelStatus | None,
        rooms: Callable[[], list[DeviceRoom]],
    ) -> bool:
        """Whether healthy ``node``, where the model is ``status``, can serve it now."""
        if status is None:
            return False
        if status in ("loaded", "loading"):
            return True
        return not node.cordoned and fits(rooms(), Need.of(self._profiles.get(model_id)))

    def card(self, name: str) -> ModelCard:
        """The ``/v1/models/{name}`` entry (``name`` may be an alias).

        Raises:
            InvalidModelIdError: ``name`` does not follow the model-id grammar.
            ModelNotFoundError: the fleet cannot serve it now.
        """
        model_id = self.resolve(name)
        return _card(name, self.survey()[model_id])

    def model_list(self) -> ModelList:
        """``/v1/models``: every servable model, then each of its aliases."""
        cards = []
        for model_id, seen in self.survey().items():
            if seen.servable:
                cards += [_card(n, seen) for n in (model_id, *self.aliases(model_id))]
        return ModelList(data=cards)


def _once(reckon: Callable[[], list[DeviceRoom]]) -> Callable[[], list[DeviceRoom]]:
    """``reckon``, called at most once (``functools.cache`` costs more to make than this)."""
    rooms: list[DeviceRoom] | None = None

    def once() -> list[DeviceRoom]:
        nonlocal rooms
        if rooms is None:
            rooms = reckon()
        return rooms

    return once


def _card(name: str, seen: Seen) -> ModelCard:
    return ModelCard(id=name, max_model_len=seen.max_model_len, locations=seen.locations)
