"""Which models the fleet can serve now (DESIGN §4 "Servable models"), and what names mean.

A model is servable when a healthy node has it loaded or loading, or knows it (``available``,
``failed``, ``unloading``: loadable) and could hold its footprint in its devices' total memory.
models.toml adds footprints and aliases; a model it does not list but a healthy node reports is
servable too. ``/v1/models`` and the router both ask this module, so they always agree. It reads
the fleet's state and never changes it.
"""

from collections.abc import Mapping, Sequence

from cortex_core.config import ModelProfile, ModelsConfig
from cortex_core.errors import ModelNotFoundError
from cortex_core.ids import check_model_id
from cortex_core.wire.models import ModelCard, ModelList, ModelLocation
from cortex_gateway.fleet.node import Node
from cortex_gateway.placement.policy import fits
from cortex_gateway.placement.snapshot import Need

__all__ = ["Catalogue"]


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
        status = node.status(model_id)
        if not node.healthy or status is None:
            return False
        if status in ("loaded", "loading"):
            return True
        return not node.cordoned and fits(node.rooms(), Need.of(self._profiles.get(model_id)))

    def servable(self, model_id: str) -> bool:
        """Whether some healthy node can serve ``model_id`` now."""
        return any(self.servable_on(node, model_id) for node in self._nodes)

    def model_ids(self) -> list[str]:
        """Every id models.toml or a healthy node names, models.toml's first."""
        ids = dict.fromkeys(self._profiles)
        for node in self._nodes:
            if node.healthy:
                ids.update(dict.fromkeys(sorted(m for m in node.residents if node.status(m))))
        return list(ids)

    def locations(self, model_id: str) -> list[ModelLocation]:
        """The healthy nodes that know ``model_id``, and its state on each."""
        return [
            ModelLocation(node=node.name, status=status)
            for node in self._nodes
            if node.healthy and (status := node.status(model_id)) is not None
        ]

    def card(self, name: str) -> ModelCard:
        """The ``/v1/models/{name}`` entry (``name`` may be an alias).

        Raises:
            InvalidModelIdError: ``name`` does not follow the model-id grammar.
            ModelNotFoundError: the fleet cannot serve it now.
        """
        return self._card(name, self.resolve(name))

    def model_list(self) -> ModelList:
        """``/v1/models``: every servable model, then each of its aliases."""
        cards = []
        for model_id in self.model_ids():
            if self.servable(model_id):
                cards += [self._card(n, model_id) for n in (model_id, *self.aliases(model_id))]
        return ModelList(data=cards)

    def _card(self, name: str, model_id: str) -> ModelCard:
        return ModelCard(
            id=name,
            max_model_len=self._max_model_len(model_id),
            locations=self.locations(model_id),
        )

    def _max_model_len(self, model_id: str) -> int | None:
        infos = [i for n in self._nodes if n.healthy and (i := n.info(model_id)) is not None]
        loaded = [i.max_model_len for i in infos if i.status == "loaded" and i.max_model_len]
        if loaded:
            return loaded[0]
        profile = self._profiles.get(model_id)
        return profile.max_model_len if profile is not None else None
