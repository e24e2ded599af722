import logging
from importlib import metadata

import pytest

from cortex_neuron.engine import install


def versions(table):
    def version(name):
        if name not in table:
            raise metadata.PackageNotFoundError(name)
        return table[name]

    return version


@pytest.mark.parametrize(
    ("installed", "broken"),
    [
        ({}, []),
        ({"torch": "2.9.1", "torchvision": "0.24.1"}, []),
        ({"torch": "2.13.0+cpu"}, []),
        (
            {"torch": "2.13.0+cpu", "torchvision": "0.28.0", "torchcodec": "0.17"},
            ["torchvision", "torchcodec"],
        ),
    ],
)
def test_check_install(monkeypatch, caplog, installed, broken):
    monkeypatch.setattr("cortex_neuron.engine.install.metadata.version", versions(installed))
    with caplog.at_level(logging.ERROR):
        assert install.check_install() == broken
    assert ("pip uninstall -y" in caplog.text) is bool(broken)
