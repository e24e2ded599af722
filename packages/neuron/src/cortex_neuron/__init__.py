"""The neuron: the cortex node daemon that embeds vLLM and owns its models' lifecycle."""

from importlib.metadata import version

__all__ = ["__version__"]

__version__ = version("helexa-neuron")
