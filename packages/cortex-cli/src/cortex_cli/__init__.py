"""The ``cortex`` command: run the gateway, see and steer the fleet."""

from importlib.metadata import version

__all__ = ["__version__"]

__version__ = version("helexa-cortex-cli")
