"""A check of the vLLM CPU install that says clearly what is wrong, before vLLM fails obscurely.

vLLM's CPU build pins a ``+cpu`` torch; the PyPI builds of torchvision, torchaudio and torchcodec
that its dependencies pull in then break ``import vllm``. The ``[cpu]`` extra cannot remove them,
so the install recipe does, and this check names them when that step was missed.
"""

import logging
from importlib import metadata

__all__ = ["BROKEN_BESIDE_CPU_TORCH", "check_install"]

logger = logging.getLogger(__name__)

BROKEN_BESIDE_CPU_TORCH = ("torchvision", "torchaudio", "torchcodec")


def check_install() -> list[str]:
    """The packages that will break ``import vllm`` here (logged as an error), if any."""
    try:
        torch = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return []
    if "+cpu" not in torch:
        return []
    present = []
    for name in BROKEN_BESIDE_CPU_TORCH:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        present.append(name)
    if present:
        logger.error(
            "%s installed beside torch %s will break `import vllm`; remove them with: "
            "pip uninstall -y torchvision torchaudio torchcodec triton",
            ", ".join(present),
            torch,
        )
    return present
