"""The floor of the chosen stack: Starlette + Hypercorn + aiohttp forwarding, no features.

No routing, auth, metrics, logging or checks: read the body, post it upstream, send back what
comes (streamed when the client asked for a stream).
"""

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import msgspec
from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route


class Routing(msgspec.Struct):
    stream: bool = False


def build(upstream: str) -> Starlette:
    session: aiohttp.ClientSession

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal session
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            yield

    async def chat(request: Request) -> Response:
        body = await request.body()
        stream = msgspec.json.decode(body, type=Routing).stream
        resp = await session.post(
            upstream + "/v1/chat/completions",
            data=body,
            headers={"content-type": "application/json"},
        )
        if stream:
            return StreamingResponse(
                resp.content.iter_any(),
                status_code=resp.status,
                media_type="text/event-stream",
                background=BackgroundTask(resp.release),
            )
        data = await resp.read()
        resp.release()
        return Response(data, status_code=resp.status, media_type="application/json")

    return Starlette(
        routes=[Route("/v1/chat/completions", chat, methods=["POST"])], lifespan=lifespan
    )


if __name__ == "__main__":
    config = Config()
    config.bind = [f"127.0.0.1:{sys.argv[1]}"]
    asyncio.run(serve(build(sys.argv[2]), config))  # type: ignore[arg-type]
