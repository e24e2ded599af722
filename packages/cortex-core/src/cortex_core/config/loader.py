"""Load a configuration file into a frozen struct: defaults < file < environment < flags.

- The file is TOML, read with :mod:`tomllib`.
- Environment variables named ``<PREFIX>_<KEY>__<KEY>…`` override keys (``CORTEX_GATEWAY__LISTEN``
  sets ``gateway.listen``; ``CORTEX__MODELS_CONFIG`` the top-level ``models_config``; a number
  indexes an array, ``CORTEX_NEURONS__0__TOKEN``). Only names holding ``__`` are config: the
  CLI's ``CORTEX_URL`` is not. A value starting with ``[`` or ``{`` is a TOML array or table;
  any other value is a string that converts to the key's type (``"8080"`` → 8080).
- Command-line flags override last, as ``{"gateway.listen": value}``.
- Unknown keys are errors, wherever they come from. Relative paths resolve against the config
  file's folder. ``*_file`` keys read secrets from files.

Every problem is one :class:`ConfigError` naming where the value came from (file or variable),
the key path and what was expected. This module is the only one that reads ``os.environ``
(tests pass their own mapping instead).
"""

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

import msgspec
import msgspec.inspect as mi

__all__ = ["ConfigError", "ConfigStruct", "FieldError", "load", "redacted"]

T = TypeVar("T", bound="ConfigStruct")

_REDACTED = "<redacted>"
_AT_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_PATH_PART = re.compile(r"\.(?P<key>[^.\[]+)|\[(?P<index>\d+)\]")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<key>[^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<key>[^`]*)`$")

Key = str | int
KeyPath = tuple[Key, ...]


class ConfigError(Exception):
    """A configuration problem: where it came from, which key, what was expected."""

    def __init__(self, source: str, problem: str, key: str | None = None) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")


class FieldError(ValueError):
    """Raised by a config struct's ``__post_init__`` to blame one of its own fields."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field


class ConfigStruct(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Base of every config table: frozen, unknown keys refused.

    Subclasses declare which of their fields are file paths (resolved against the config
    file's folder), which ``*_file`` field fills which secret, and which fields are secrets
    (redacted when printed).
    """

    config_paths: ClassVar[tuple[str, ...]] = ()
    config_secret_files: ClassVar[Mapping[str, str]] = {}
    config_secrets: ClassVar[tuple[str, ...]] = ()


def load(
    type_: type[T],
    path: str | Path | None,
    *,
    env_prefix: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> T:
    """Build ``type_`` from its defaults, the file at ``path``, the environment and ``overrides``.

    Args:
        type_: The config struct to build.
        path: The TOML file; ``None`` uses defaults (and the environment) only.
        env_prefix: ``"CORTEX"`` reads ``CORTEX_…__…`` variables from ``environ``.
        environ: The environment to read; ``None`` reads the process's.
        overrides: Command-line values by dotted key path (``{"gateway.listen": "…"}``).

    Raises:
        ConfigError: the file cannot be read or parsed, or a value is unknown or wrong.
    """
    source = str(path) if path is not None else "defaults"
    data: dict[str, Any] = _read(Path(path)) if path is not None else {}
    origins: dict[KeyPath, str] = {}
    if env_prefix is not None:
        env = os.environ if environ is None else environ
        for name, keys, value in _environment(env_prefix, env):
            _assign(data, keys, value, f"environment variable {name}")
            origins[keys] = f"environment variable {name}"
    for dotted, value in (overrides or {}).items():
        keys = tuple(dotted.split("."))
        _assign(data, keys, value, "command line")
        origins[keys] = "command line"
    try:
        config = msgspec.convert(data, type_, strict=False)
    except msgspec.ValidationError as exc:
        raise _explain(exc, type_, source, origins) from exc
    base = Path(path).resolve().parent if path is not None else Path.cwd()
    finished: T = _finish(config, base, source, ())
    return finished


def redacted(config: ConfigStruct) -> dict[str, Any]:
    """``config`` as TOML-ready builtins: secrets replaced, unset (null) values left out."""
    table: dict[str, Any] = _redact(config)
    return table


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), f"not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the file: {exc.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"invalid TOML: {exc}") from None


def _environment(prefix: str, environ: Mapping[str, str]) -> list[tuple[str, KeyPath, Any]]:
    found = []
    head = prefix + "_"
    for name in sorted(environ):
        if not name.startswith(head) or "__" not in name:
            continue
        parts = name[len(head) :].removeprefix("_").lower().split("__")
        if not all(parts):
            raise ConfigError(
                f"environment variable {name}",
                f"expected {prefix}_SECTION__KEY (or {prefix}__KEY for a top-level key)",
            )
        keys = tuple(int(p) if p.isdigit() else p for p in parts)
        found.append((name, keys, _env_value(name, environ[name])))
    return found


def _env_value(name: str, raw: str) -> Any:
    if not raw.lstrip().startswith(("[", "{")):
        return raw
    try:
        return tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"environment variable {name}", f"not a valid TOML array or table: {exc}"
        ) from None


def _assign(data: dict[str, Any], keys: KeyPath, value: Any, source: str) -> None:
    node: Any = data
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        if isinstance(key, int):
            if not isinstance(node, list) or key >= len(node):
                where = _dotted(keys[:depth]) or "the top level"
                raise ConfigError(source, f"{where} has no item {key}", _dotted(keys))
            if last:
                node[key] = value
            else:
                node = node[key]
            continue
        if not isinstance(node, dict):
            raise ConfigError(source, f"{_dotted(keys[:depth])} is not a table", _dotted(keys))
        if last:
            node[key] = value
        else:
            node = node.setdefault(key, {})


def _explain(
    exc: msgspec.ValidationError, type_: type[Any], source: str, origins: Mapping[KeyPath, str]
) -> ConfigError:
    message = str(exc)
    at = _AT_PATH.search(message)
    problem = message[: at.start()] if at else message
    keys: KeyPath = _keys(at["path"]) if at else ()
    if isinstance(exc.__cause__, FieldError):
        keys = (*keys, exc.__cause__.field)
    elif unknown := _UNKNOWN.match(problem):
        known = _known_keys(mi.type_info(type_), keys)
        keys = (*keys, unknown["key"])
        close = difflib.get_close_matches(unknown["key"], known, n=1)
        hint = f"did you mean `{close[0]}`?" if close else f"known keys: {', '.join(known)}"
        problem = f"unknown key ({hint})"
    elif missing := _MISSING.match(problem):
        keys = (*keys, missing["key"])
        problem = "required key is missing"
    else:
        problem = problem[:1].lower() + problem[1:]
    origin = next(
        (o for k, o in origins.items() if k[: len(keys)] == keys or keys[: len(k)] == k), source
    )
    return ConfigError(origin, problem, _dotted(keys) or None)


def _keys(msgspec_path: str) -> KeyPath:
    return tuple(
        int(m["index"]) if m["index"] is not None else m["key"]
        for m in _PATH_PART.finditer(msgspec_path)
    )


def _dotted(keys: KeyPath) -> str:
    text = ""
    for key in keys:
        text += f"[{key}]" if isinstance(key, int) else f".{key}"
    return text.lstrip(".")


def _known_keys(info: mi.Type, keys: KeyPath) -> list[str]:
    # Config tables nest as structs and tuples of structs, nothing else.
    for key in keys:
        if isinstance(key, int):
            info = cast(mi.VarTupleType, info).item_type
        else:
            info = next(f.type for f in cast(mi.StructType, info).fields if f.encode_name == key)
    return [f.encode_name for f in cast(mi.StructType, info).fields]


def _finish(node: Any, base: Path, source: str, keys: KeyPath) -> Any:
    if isinstance(node, tuple | list):
        return type(node)(_finish(v, base, source, (*keys, i)) for i, v in enumerate(node))
    if not isinstance(node, ConfigStruct):
        return node
    changes: dict[str, Any] = {}
    for name in node.__struct_fields__:
        value = getattr(node, name)
        finished = _finish(value, base, source, (*keys, name))
        if name in node.config_paths:
            finished = _resolve(finished, base)
        if finished is not value:
            changes[name] = finished
    for file_field, target in node.config_secret_files.items():
        file_name = changes.get(file_field, getattr(node, file_field))
        if file_name:
            changes[target] = _read_secret(node, file_field, target, file_name, source, keys)
    return msgspec.structs.replace(node, **changes) if changes else node


def _resolve(value: Any, base: Path) -> Any:
    if isinstance(value, tuple):
        return tuple(_resolve(v, base) for v in value)
    if isinstance(value, str) and value and not Path(value).is_absolute():
        return str(base / value)
    return value


def _read_secret(
    node: ConfigStruct, file_field: str, target: str, file_name: str, source: str, keys: KeyPath
) -> Any:
    key = _dotted((*keys, file_field))
    current = getattr(node, target)
    try:
        text = Path(file_name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(source, f"cannot read secret file {file_name}: {reason}", key) from None
    if isinstance(current, tuple):
        lines = (line.strip() for line in text.splitlines())
        found = tuple(line for line in lines if line and not line.startswith("#"))
        if not found:
            raise ConfigError(source, f"secret file {file_name} holds no keys", key)
        return current + found
    if current:
        raise ConfigError(source, f"set either `{target}` or `{file_field}`, not both", key)
    secret = text.strip()
    if not secret:
        raise ConfigError(source, f"secret file {file_name} is empty", key)
    return secret


def _redact(node: Any) -> Any:
    if isinstance(node, msgspec.Struct):
        secrets = node.config_secrets if isinstance(node, ConfigStruct) else ()
        table = {}
        for name in node.__struct_fields__:
            value = getattr(node, name)
            if value is None:
                continue
            if name in secrets and value:
                value = [_REDACTED] * len(value) if isinstance(value, tuple) else _REDACTED
            table[name] = _redact(value)
        return table
    if isinstance(node, tuple | list):
        return [_redact(v) for v in node]
    if isinstance(node, dict):
        return {k: _redact(v) for k, v in node.items() if v is not None}
    return node
