"""The server parts both daemons share: request ids, access log, errors, keys, SSE, serving."""

import asyncio
import json
import logging
import socket
from typing import Any

import httpx
import pytest

from cortex_core import asgi
from cortex_core.asgi.serving import listen, serve, url_of
from cortex_core.errors import AuthenticationError, RateLimitError
from cortex_core.logging import request_id


class Recorder:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message) -> None:
        self.messages.append(message)

    @property
    def start(self) -> dict[str, Any]:
        return self.messages[0]

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.start["headers"])


def receiver(*messages: dict[str, Any]):
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    return receive


def http(path: str = "/v1/x", headers: list[Any] | None = None) -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": path, "headers": headers or []}


async def ok_app(scope, receive, send) -> None:
    assert request_id.get() != "-"
    await send({"type": "http.response.start", "status": 201, "headers": [(b"a", b"b")]})
    await send({"type": "http.response.body", "body": b"done"})


def middleware(app, **kwargs) -> asgi.RequestContextMiddleware:
    return asgi.RequestContextMiddleware(app, daemon="test", access_logger="t.access", **kwargs)


async def test_the_clients_request_id_is_echoed_and_the_access_line_logged(caplog):
    send = Recorder()
    with caplog.at_level(logging.INFO, logger="t.access"):
        await middleware(ok_app)(http(headers=[(b"x-request-id", b"abc")]), receiver(), send)
    assert send.start["status"] == 201
    assert send.headers[b"x-request-id"] == b"abc"
    (line,) = [r for r in caplog.records if r.name == "t.access"]
    assert line.getMessage().startswith("POST /v1/x 201 ")
    assert line.getMessage().endswith(" ms")
    assert request_id.get() == "-"  # reset once the request ended


async def test_a_new_request_id_is_made_and_nothing_is_logged_above_info(caplog):
    send = Recorder()
    with caplog.at_level(logging.WARNING, logger="t.access"):
        await middleware(ok_app)(http(headers=[(b"x-request-id", b"bad id")]), receiver(), send)
    assert len(send.headers[b"x-request-id"]) == 32
    assert [r for r in caplog.records if r.name == "t.access"] == []


async def test_an_unexpected_error_is_a_500_in_the_routes_dialect(caplog):
    async def broken(scope, receive, send) -> None:
        raise RuntimeError("a bug")

    send = Recorder()
    with caplog.at_level(logging.INFO):
        await middleware(broken, render_error=lambda path, exc: f"{path}:{exc.code}".encode())(
            http(headers=[(b"x-request-id", b"r1")]), receiver(), send
        )
    assert send.start["status"] == 500
    assert send.messages[1]["body"] == b"/v1/x:internal_error"
    assert send.headers[b"x-request-id"] == b"r1"
    assert "a bug" in caplog.text
    assert "POST /v1/x 500" in caplog.text


async def test_the_default_500_is_openais_envelope_naming_the_request_id():
    async def broken(scope, receive, send) -> None:
        raise RuntimeError("a bug")

    send = Recorder()
    await middleware(broken)(http(headers=[(b"x-request-id", b"r2")]), receiver(), send)
    assert send.messages[1]["body"] == (
        b'{"error":{"message":"Internal error; the test\'s log has it under request id r2",'
        b'"type":"server_error","param":null,"code":"internal_error"}}'
    )


async def test_an_error_after_the_answer_started_is_left_to_the_server(caplog):
    async def half(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("mid-stream")

    send = Recorder()
    with caplog.at_level(logging.INFO, logger="t.access"), pytest.raises(RuntimeError):
        await middleware(half)(http(), receiver(), send)
    assert len(send.messages) == 1
    assert "POST /v1/x 200" in caplog.text


async def test_other_scopes_pass_through_untouched():
    seen = []

    async def app(scope, receive, send) -> None:
        seen.append(scope["type"])

    await middleware(app)({"type": "lifespan"}, receiver(), Recorder())
    assert seen == ["lifespan"]


async def test_an_error_answer_carries_its_length_and_retry_after():
    send = Recorder()
    error = RateLimitError("slow down", retry_after=2.5)
    await asgi.send_error(send, error, b"{}", [(b"x", b"y")])
    assert send.start["status"] == 429
    assert send.headers == {
        b"content-type": b"application/json",
        b"content-length": b"2",
        b"retry-after": b"3",
        b"x": b"y",
    }
    assert asgi.openai_error("/", error).startswith(b'{"error":{"message":"slow down"')


async def test_refusing_an_unread_body_discards_what_still_arrives():
    send = Recorder()
    receive = receiver(
        {"type": "http.request", "body": b"x" * 10, "more_body": True},
        {"type": "http.disconnect"},
    )
    await asgi.refuse_unread(send, receive, AuthenticationError("no"), b"{}")
    assert send.start["status"] == 401


async def test_refusing_gives_up_on_a_client_that_neither_sends_nor_leaves(monkeypatch):
    monkeypatch.setattr("cortex_core.asgi.answers.UNREAD_BODY_WAIT_S", 0.01)
    send = Recorder()
    await asgi.refuse_unread(send, receiver(), AuthenticationError("no"), b"{}")
    assert send.start["status"] == 401


async def test_disconnected_returns_at_the_disconnect():
    receive = receiver({"type": "http.request", "body": b""}, {"type": "http.disconnect"})
    await asyncio.wait_for(asgi.disconnected(receive), 1)


@pytest.mark.parametrize(
    ("headers", "x_api_key", "expected"),
    [
        ([(b"authorization", b"Bearer k1")], False, b"k1"),
        ([(b"authorization", b"bearer  k1 ")], False, b"k1"),
        ([(b"authorization", b"BEARER k1")], False, b"k1"),
        ([(b"authorization", b"Basic k1")], False, None),
        ([(b"authorization", b"Bearer ")], False, None),
        ([(b"x-api-key", b"k2")], True, b"k2"),
        ([(b"x-api-key", b"k2")], False, None),
        ([(b"x-api-key", b"")], True, None),
        ([], True, None),
    ],
)
def test_the_presented_key(headers, x_api_key, expected):
    assert asgi.presented_key(headers, x_api_key=x_api_key) == expected


def test_keys_are_compared_with_every_candidate():
    assert asgi.key_among(b"b", (b"a", b"b", b"c"))
    assert not asgi.key_among(b"d", (b"a", b"b"))
    assert not asgi.key_among(b"a", ())


def test_keys_are_compared_in_constant_time(monkeypatch):
    """Every candidate goes through hmac.compare_digest (never ``==``), a match or not."""
    import hmac

    seen = []
    original = hmac.compare_digest

    def compare(a, b):
        seen.append((a, b))
        return original(a, b)

    monkeypatch.setattr("cortex_core.asgi.credentials.hmac.compare_digest", compare)
    assert asgi.key_among(b"a", (b"a", b"b"))
    assert seen == [(b"a", b"a"), (b"a", b"b")]


def test_a_failed_stream_ends_with_the_error_then_done():
    event = asgi.error_event(RateLimitError("later"))
    assert event.startswith(b'data: {"error":{"message":"later"')
    assert event.endswith(b"\n\n" + asgi.DONE)
    assert asgi.DONE == b"data: [DONE]\n\n"


def test_a_failed_responses_stream_ends_with_a_typed_error_event():
    event = asgi.responses_error_event(RateLimitError("later", param="model"), 7)
    kind, data = event.split(b"\n", 1)
    assert kind == b"event: error"
    assert data.endswith(b"\n\n")
    assert json.loads(data.removeprefix(b"data: ")) == {
        "type": "error",
        "code": "rate_limit_exceeded",
        "message": "later",
        "param": "model",
        "sequence_number": 7,
    }


def test_listen_binds_a_free_port_and_names_a_busy_one():
    sock = listen("127.0.0.1:0")
    try:
        assert url_of(sock).startswith("http://127.0.0.1:")
        port = sock.getsockname()[1]
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            listen(f"127.0.0.1:{port}")
    finally:
        sock.close()


def test_an_ipv6_url_is_bracketed():
    sock = socket.socket(socket.AF_INET6)
    try:
        sock.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    try:
        assert url_of(sock).startswith("http://[::1]:")
    finally:
        sock.close()


async def test_serve_answers_on_the_socket_until_the_trigger():
    sock = listen("127.0.0.1:0")
    stop = asyncio.Event()

    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
        else:
            await middleware(ok_app)(scope, receive, send)

    server = asyncio.create_task(
        serve(app, sock, stop.wait, graceful_s=1, errorlog=logging.getLogger("t"))
    )
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(100):
                try:
                    answer = await client.get(url_of(sock))
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.05)
        assert (answer.status_code, answer.text) == (201, "done")
    finally:
        stop.set()
        await asyncio.wait_for(server, 10)
        sock.close()
