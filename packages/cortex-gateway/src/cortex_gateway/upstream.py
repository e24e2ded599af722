"""The gateway's only way to talk to neurons: the ``Upstream`` seam and its aiohttp adapter.

One pooled ``ClientSession`` per app lifespan; every call carries a time bound; every aiohttp
exception is translated here, once, into the :mod:`cortex_core.errors` tree (remote faults), and
a neuron's error envelope is rebuilt into the error it names. The peer's token goes with every
call to that peer, and the request id with every call made on a request's behalf. This module
knows nothing of routing or of the client's connection.
"""

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar

import aiohttp
import msgspec

from cortex_core import decode, encode
from cortex_core.config import NeuronPeer
from cortex_core.errors import (
    CortexError,
    ErrorEnvelope,
    InvalidRequestError,
    UpstreamError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    error_from_envelope,
)
from cortex_core.logging import request_id

__all__ = [
    "AiohttpUpstream",
    "ConnectError",
    "Refusal",
    "Upstream",
    "UpstreamResponse",
    "peer_error",
]

T = TypeVar("T")

CONNECT_TIMEOUT_S = 5.0
"""Neurons are on a private network: one that does not accept in this long is not there."""


class ConnectError(UpstreamUnavailableError):
    """No connection to the neuron: nothing was sent, so another node may be tried."""


@dataclass(frozen=True)
class Refusal:
    """A neuron's error answer: as it came, and the error its envelope names (parsed once)."""

    status: int
    payload: bytes
    content_type: str
    error: CortexError


class UpstreamResponse(Protocol):
    """An inference answer from a neuron, read as it arrives."""

    @property
    def status(self) -> int:
        """The neuron's HTTP status."""
        ...  # pragma: no cover

    def header(self, name: str) -> str | None:
        """One response header, or ``None``."""
        ...  # pragma: no cover

    async def read(self) -> bytes:
        """The whole body."""
        ...  # pragma: no cover

    async def read_chunk(self) -> bytes:
        """The next bytes that arrived; ``b""`` at the end of the body."""
        ...  # pragma: no cover

    async def refusal(self) -> Refusal:
        """The whole body of an error answer (status 400 or more), and the error it names."""
        ...  # pragma: no cover


class Upstream(Protocol):
    """Calls to neurons: the lifecycle API (JSON in, typed JSON out) and inference."""

    async def get(self, peer: NeuronPeer, path: str, type_: type[T], *, limit_s: float) -> T:
        """``GET`` ``path`` on ``peer``, decoded as ``type_``."""
        ...  # pragma: no cover

    async def post(
        self,
        peer: NeuronPeer,
        path: str,
        payload: msgspec.Struct,
        type_: type[T],
        *,
        limit_s: float,
    ) -> T:
        """``POST`` ``payload`` as JSON to ``path`` on ``peer``, the answer decoded as ``type_``."""
        ...  # pragma: no cover

    def send(
        self, peer: NeuronPeer, url: str, body: bytes, *, total: float | None, idle: float | None
    ) -> AbstractAsyncContextManager[UpstreamResponse]:
        """``POST`` an inference ``body`` to ``url``; the response is closed on leaving."""
        ...  # pragma: no cover


def peer_error(node: str, status: int, body: bytes, retry_after: str | None) -> CortexError:
    """The error a neuron's error answer names; :class:`UpstreamError` if it names none."""
    try:
        envelope = decode(body, ErrorEnvelope)
    except InvalidRequestError:
        return UpstreamError(f"neuron {node} answered HTTP {status} without an error envelope")
    try:
        seconds = float(retry_after) if retry_after else None
    except ValueError:
        seconds = None  # an HTTP date; the neuron sends seconds, and a client can still retry
    return error_from_envelope(status, envelope.error, retry_after=seconds)


def _translate(exc: BaseException, node: str, idle: float | None = None) -> CortexError:
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return ConnectError(f"cannot connect to neuron {node}: {exc}")
    if isinstance(exc, aiohttp.SocketTimeoutError) and idle is not None:
        return UpstreamTimeoutError(f"neuron {node} sent nothing for {idle:g} s")
    if isinstance(exc, TimeoutError):
        return UpstreamTimeoutError(f"neuron {node} did not answer in time")
    return UpstreamError(f"neuron {node} broke the connection: {str(exc) or type(exc).__name__}")


def _headers(peer: NeuronPeer, *, json: bool) -> dict[str, str]:
    headers = {}
    rid = request_id.get()
    if rid != "-":  # outside a request (polls) there is none
        headers["x-request-id"] = rid
    if json:
        headers["content-type"] = "application/json"
    if peer.token:
        headers["authorization"] = f"Bearer {peer.token}"
    return headers


class _Call:
    """One inference call and its response, as :meth:`AiohttpUpstream.send` returns it.

    A class rather than a generator-based context manager: it is on every request's path.
    """

    __slots__ = ("_idle", "_node", "_request", "_resp")

    def __init__(
        self, request: "aiohttp.client._RequestContextManager", node: str, idle: float | None
    ) -> None:
        self._request = request
        self._node = node
        self._idle = idle

    async def __aenter__(self) -> "_Call":
        try:
            self._resp = await self._request
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _translate(exc, self._node, self._idle) from exc
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._resp.content.at_eof():
            self._resp.release()
        else:
            # Closing (not releasing) drops the connection: the neuron sees the client go
            # and aborts the engine's request (DESIGN §7.5).
            self._resp.close()

    @property
    def status(self) -> int:
        return self._resp.status

    def header(self, name: str) -> str | None:
        return self._resp.headers.get(name)

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _translate(exc, self._node, self._idle) from exc

    async def read_chunk(self) -> bytes:
        try:
            return await self._resp.content.readany()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _translate(exc, self._node, self._idle) from exc

    async def refusal(self) -> Refusal:
        payload = await self.read()
        headers = self._resp.headers
        return Refusal(
            status=self._resp.status,
            payload=payload,
            content_type=headers.get("content-type", "application/json"),
            error=peer_error(self._node, self._resp.status, payload, headers.get("retry-after")),
        )


class AiohttpUpstream:
    """:class:`Upstream` over one pooled ``aiohttp.ClientSession``."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self._timeouts: dict[tuple[float | None, float | None], aiohttp.ClientTimeout] = {}

    @classmethod
    @asynccontextmanager
    async def open(cls) -> AsyncIterator["AiohttpUpstream"]:
        """A session for the app's lifespan, closed with it."""
        # No pool limit: a stampede of streams must not queue behind the pool; every call
        # has its own time bound instead.
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            yield cls(session)

    async def get(self, peer: NeuronPeer, path: str, type_: type[T], *, limit_s: float) -> T:
        """See :meth:`Upstream.get`."""
        return await self._call(peer, "GET", path, None, type_, limit_s)

    async def post(
        self,
        peer: NeuronPeer,
        path: str,
        payload: msgspec.Struct,
        type_: type[T],
        *,
        limit_s: float,
    ) -> T:
        """See :meth:`Upstream.post`."""
        return await self._call(peer, "POST", path, encode(payload), type_, limit_s)

    async def _call(
        self,
        peer: NeuronPeer,
        method: str,
        path: str,
        data: bytes | None,
        type_: type[T],
        limit_s: float,
    ) -> T:
        try:
            async with self._session.request(
                method,
                peer.base_url + path,
                data=data,
                headers=_headers(peer, json=data is not None),
                timeout=aiohttp.ClientTimeout(total=limit_s, sock_connect=CONNECT_TIMEOUT_S),
            ) as resp:
                body = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _translate(exc, peer.name) from exc
        if resp.status >= 400:
            raise peer_error(peer.name, resp.status, body, resp.headers.get("Retry-After"))
        try:
            return decode(body, type_)
        except InvalidRequestError as exc:
            raise UpstreamError(
                f"neuron {peer.name} sent an unreadable answer to {method} {path}: {exc.message}"
            ) from exc

    def send(
        self, peer: NeuronPeer, url: str, body: bytes, *, total: float | None, idle: float | None
    ) -> AbstractAsyncContextManager[UpstreamResponse]:
        """See :meth:`Upstream.send`."""
        timeout = self._timeouts.get((total, idle))
        if timeout is None:  # one per distinct bound: a handful, made once
            timeout = self._timeouts[(total, idle)] = aiohttp.ClientTimeout(
                total=total, sock_connect=CONNECT_TIMEOUT_S, sock_read=idle
            )
        request = self._session.post(
            url, data=body, headers=_headers(peer, json=True), timeout=timeout
        )
        return _Call(request, peer.name, idle)
