"""The OpenAI model list (``GET /v1/models``), with cortex's additions.

The neuron lists the models it has loaded; the gateway lists every model the fleet can serve and
adds ``locations`` (which nodes hold it, in what state). Fields the OpenAI SDK does not know are
ignored by it.
"""

from typing import Literal

import msgspec

from cortex_core.wire.control import ModelStatus

__all__ = ["ModelCard", "ModelList", "ModelLocation"]


class ModelLocation(msgspec.Struct, kw_only=True, frozen=True):
    """A node holding the model, and the model's state there."""

    node: str
    status: ModelStatus


class ModelCard(msgspec.Struct, kw_only=True, frozen=True):
    """One entry of ``data``; ``locations`` is present only in the gateway's list."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "cortex"
    max_model_len: int | None = None
    locations: list[ModelLocation] | msgspec.UnsetType = msgspec.UNSET


class ModelList(msgspec.Struct, kw_only=True, frozen=True):
    """``{"object": "list", "data": [...]}``."""

    object: Literal["list"] = "list"
    data: list[ModelCard] = msgspec.field(default_factory=list)
