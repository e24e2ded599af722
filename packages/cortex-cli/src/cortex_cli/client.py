"""The CLI's one client of the gateway: typed answers (the gateway's own structs), one-line errors.

Sync on purpose (urllib, no extra dependency): a command makes a handful of requests. Every
failure becomes a :class:`GatewayError`, a ``ClickException`` (exit status 1) whose message is
the one line an operator needs: the URL it could not reach, the key variable to set, the ids
close to a mistyped one, the neuron's reason for a refused load.
"""

import difflib
import functools
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import click
import msgspec

from cortex_core.errors import ErrorEnvelope
from cortex_core.wire.models import ModelList
from cortex_gateway.fleet.views import FleetView
from cortex_gateway.routes import AdminLoaded, AdminModelRequest, AdminNode, AdminUnloaded

__all__ = ["DEFAULT_URL", "Gateway", "GatewayError", "NodeAction", "gateway_options"]

DEFAULT_URL = "http://127.0.0.1:31313"
READ_TIMEOUT_S = 10.0
"""Reads answer from the gateway's memory; a load or an unload takes as long as it takes."""

T = TypeVar("T")
NodeAction = Literal["cordon", "uncordon", "drain"]


class GatewayError(click.ClickException):
    """A failure talking to the gateway, as one line; exit status 1 (a runtime failure)."""

    exit_code = 1

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class Gateway:
    """The gateway at ``url``, asked with ``api_key`` (a client key, or an admin key for admin)."""

    def __init__(self, url: str, api_key: str | None) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key

    def fleet(self) -> FleetView:
        """``GET /fleet``."""
        return self._call("GET", "/fleet", FleetView)

    def fleet_document(self) -> bytes:
        """``GET /fleet`` as the gateway sent it (for ``--json``), checked to be one."""
        body = self._send("GET", "/fleet", None, READ_TIMEOUT_S)
        self._decode(body, "/fleet", FleetView)
        return body

    def models(self) -> ModelList:
        """``GET /v1/models``: every model the fleet can serve now, aliases included."""
        return self._call("GET", "/v1/models", ModelList)

    def load(self, model: str, node: str | None, *, force: bool = False) -> AdminLoaded:
        """``POST /admin/models/load``; returns once the model is loaded."""
        body = AdminModelRequest(model=model, node=node, force=force)
        return self._call("POST", "/admin/models/load", AdminLoaded, body, model=model)

    def unload(
        self, model: str, node: str | None, *, force: bool = False, drain: bool = False
    ) -> AdminUnloaded:
        """``POST /admin/models/unload``."""
        body = AdminModelRequest(model=model, node=node, force=force, drain=drain)
        return self._call("POST", "/admin/models/unload", AdminUnloaded, body, model=model)

    def steer(self, node: str, action: NodeAction) -> AdminNode:
        """``POST /admin/nodes/{node}/{action}``."""
        return self._call("POST", f"/admin/nodes/{node}/{action}", AdminNode)

    def _call(
        self,
        method: str,
        path: str,
        into: type[T],
        body: AdminModelRequest | None = None,
        *,
        model: str | None = None,
    ) -> T:
        timeout = None if method == "POST" else READ_TIMEOUT_S
        try:
            answer = self._send(method, path, body, timeout)
        except GatewayError as exc:
            if exc.code in ("model_not_found", "model_not_loaded") and model is not None:
                raise GatewayError(
                    f"{exc.message}{self._suggest(model)}", status=exc.status, code=exc.code
                ) from exc
            raise
        return self._decode(answer, path, into)

    def _send(
        self, method: str, path: str, body: AdminModelRequest | None, timeout: float | None
    ) -> bytes:
        data = None if body is None else msgspec.json.encode(body)
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return bytes(answer.read())
        except urllib.error.HTTPError as exc:
            raise self._refusal(exc, admin=path.startswith("/admin/")) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise GatewayError(f"cannot reach the gateway at {self.url}: {reason}") from exc

    def _decode(self, body: bytes, path: str, into: type[T]) -> T:
        try:
            return msgspec.json.decode(body, type=into)
        except msgspec.DecodeError as exc:
            raise GatewayError(f"{self.url}{path} is not a cortex gateway's answer: {exc}") from exc

    def _refusal(self, exc: urllib.error.HTTPError, *, admin: bool) -> GatewayError:
        try:
            detail = msgspec.json.decode(exc.read(), type=ErrorEnvelope).error
            message, code, param = detail.message, detail.code, detail.param
        except msgspec.DecodeError:
            message, code, param = str(exc.reason), None, None
        if exc.code in (401, 403):
            need = "an admin key" if admin else "a key"
            hint = "; admin routes need an admin key" if admin else ""
            return GatewayError(
                f"the gateway refused the key ({exc.code} {message}): set CORTEX_API_KEY "
                f"(or --api-key) to {need}{hint}",
                status=exc.code,
                code=code,
            )
        if exc.code == 404 and param == "node":
            return GatewayError(f"no such node: {message}", status=404, code=code)
        if exc.code == 404 and code in ("model_not_found", "model_not_loaded"):
            return GatewayError(message, status=404, code=code)
        retry = exc.headers.get("Retry-After") if exc.headers else None
        later = f" (retry after {retry} s)" if retry else ""
        return GatewayError(
            f"the gateway answered {exc.code}: {message}{later}", status=exc.code, code=code
        )

    def _suggest(self, model: str) -> str:
        try:
            listing = self.models()
        except GatewayError:
            return ""
        ids = [card.id for card in listing.data]
        close = difflib.get_close_matches(model, ids, n=3, cutoff=0.75)
        return f"; did you mean {' or '.join(close)}?" if close else ""


def gateway_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--url`` and ``--api-key`` (or ``CORTEX_URL``, ``CORTEX_API_KEY``); pass a Gateway."""

    @click.option(
        "--url",
        envvar="CORTEX_URL",
        default=DEFAULT_URL,
        show_default=True,
        help="The gateway (or set CORTEX_URL).",
    )
    @click.option(
        "--api-key",
        envvar="CORTEX_API_KEY",
        help="A client key, an admin key for load/unload/nodes (or set CORTEX_API_KEY).",
    )
    @functools.wraps(command)
    def wrapper(*args: Any, url: str, api_key: str | None, **kwargs: Any) -> Any:
        return command(*args, gateway=Gateway(url, api_key), **kwargs)

    return wrapper
