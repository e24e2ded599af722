"""Activation: loading ``[[default_models]]`` one at a time after the listener is up.

Default models are preloads, not pins: once loaded they are ordinary models the gateway may
unload. A default model that fails to load is reported in ``/health`` and the others go on.
"""

import logging

from cortex_core.config import DefaultModel
from cortex_core.errors import CortexError
from cortex_core.wire import control
from cortex_neuron.lifecycle import Lifecycle

__all__ = ["Activation"]

logger = logging.getLogger(__name__)


class Activation:
    """Progress of the default models, as ``/health`` reports it."""

    def __init__(self, models: tuple[DefaultModel, ...]) -> None:
        self._models = models
        self._pending = [m.model_id for m in models]
        self._in_progress: str | None = None
        self._failed: list[control.ActivationFailure] = []

    async def run(self, lifecycle: Lifecycle) -> None:
        """Load each default model in turn."""
        for model in self._models:
            self._in_progress = self._pending.pop(0)
            try:
                await lifecycle.load(model)
            except CortexError as exc:
                logger.error("default model %s failed to load: %s", model.model_id, exc.message)
                self._failed.append(
                    control.ActivationFailure(model_id=model.model_id, error=exc.message)
                )
            finally:
                self._in_progress = None

    def report(self) -> control.Activation:
        """The ``activation`` object of ``/health``."""
        busy = bool(self._pending) or self._in_progress is not None
        return control.Activation(
            state="pre_warming" if busy else "ready",
            pending=list(self._pending),
            in_progress=self._in_progress,
            failed=list(self._failed),
        )
