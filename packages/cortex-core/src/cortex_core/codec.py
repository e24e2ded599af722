"""JSON encoding and decoding for every wire type, with the decoders built once and cached.

A decode failure becomes :class:`~cortex_core.errors.InvalidRequestError` whose ``param`` is the
field at fault (msgspec's path, without the leading ``$.``). This module knows nothing of HTTP.
"""

import re
from typing import Any, TypeVar

import msgspec

from cortex_core.errors import InvalidRequestError

__all__ = ["convert", "decode", "encode"]

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}
_AT_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")


def _decoder(type_: Any) -> msgspec.json.Decoder[Any]:
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.json.Decoder(type_)
    return decoder


def encode(obj: Any) -> bytes:
    """Encode ``obj`` (structs, builtins) as compact JSON."""
    return _encoder.encode(obj)


def decode(data: bytes | str, type_: type[T]) -> T:
    """Decode JSON ``data`` into ``type_``.

    Raises:
        InvalidRequestError: the JSON is malformed or does not match ``type_``.
    """
    try:
        result: T = _decoder(type_).decode(data)
    except msgspec.ValidationError as exc:
        raise _invalid(exc) from exc
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(f"The body is not valid JSON: {exc}") from exc
    return result


def convert(obj: Any, type_: type[T]) -> T:
    """Convert builtins (already-decoded JSON) into ``type_``, with :func:`decode`'s errors."""
    try:
        return msgspec.convert(obj, type_)
    except msgspec.ValidationError as exc:
        raise _invalid(exc) from exc


def _invalid(exc: msgspec.ValidationError) -> InvalidRequestError:
    message = str(exc)
    match = _AT_PATH.search(message)
    if match is None:
        return InvalidRequestError(message)
    return InvalidRequestError(message, param=match["path"] or None)
