"""The model-id grammar (DESIGN §3): ``name`` or ``org/name``, never a path.

Each part starts with a letter or digit and holds at most 64 letters, digits, ``.``, ``_`` or
``-``; so ``..``, ``/abs``, ``a/b/c`` and the empty string are refused. Every place where an
id enters the system (HTTP bodies and paths, config files) checks it with :func:`check_model_id`
or :func:`is_model_id`; nothing else decides what an id may be.
"""

import re
from typing import TypeGuard

from cortex_core.errors import InvalidModelIdError

__all__ = ["MODEL_ID_GRAMMAR", "check_model_id", "is_model_id"]

_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
_MODEL_ID = re.compile(rf"{_PART}(?:/{_PART})?")

MODEL_ID_GRAMMAR = (
    "`name` or `org/name`, each part 1-64 letters, digits, '.', '_' or '-', "
    "starting with a letter or digit"
)
"""The grammar in words, for error messages."""


def is_model_id(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a string that follows the grammar."""
    return isinstance(value, str) and _MODEL_ID.fullmatch(value) is not None


def check_model_id(value: object) -> str:
    """Return ``value`` if it is a valid model id.

    Raises:
        InvalidModelIdError: it is not a string following the grammar.
    """
    if is_model_id(value):
        return value
    raise InvalidModelIdError(
        f"{value!r:.80} is not a valid model id: expected {MODEL_ID_GRAMMAR}", param="model"
    )
