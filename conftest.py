"""Fixtures every test in the repository gets (pytest loads this root conftest for all of them)."""

import pytest


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CORTEX_* or NEURON_* variable of the developer's shell leaks into a test (STYLE C2)."""
    import os

    for name in list(os.environ):  # noqa: TID251 - clearing, not reading, configuration
        if name.startswith(("CORTEX_", "NEURON_")):
            monkeypatch.delenv(name)
