"""The cortex gateway: one OpenAI + Anthropic API in front of a fleet of neurons."""

from importlib.metadata import version

__all__ = ["__version__"]

__version__ = version("helexa-cortex-gateway")
