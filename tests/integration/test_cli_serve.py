"""`cortex serve` as its own process, in front of a fake neuron: the OpenAI SDK lists models,
chats and streams through it, its metrics count that, and SIGTERM stops it cleanly."""

import asyncio
import re
import signal
import sys
from pathlib import Path

import aiohttp
import openai
import pytest

from cortex_gateway.testing import FakeNeuron

pytestmark = pytest.mark.timeout(60)

LISTENING = re.compile(rb"cortex gateway on (http://\S+), metrics on (http://\S+)/metrics")


Gateway = tuple[asyncio.subprocess.Process, "asyncio.Task[bytes]", str, str]


async def start_gateway(config: Path) -> Gateway:
    """Run `cortex serve`; its log (stderr) keeps being read, so a full pipe never blocks it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cortex_cli",
        "serve",
        "--config",
        str(config),
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        stderr=asyncio.subprocess.PIPE,
    )
    stderr = process.stderr
    assert stderr is not None
    async with asyncio.timeout(30):
        while line := await stderr.readline():
            if match := LISTENING.search(line):
                log = asyncio.create_task(stderr.read())
                return process, log, match[1].decode(), match[2].decode()
    raise AssertionError(f"cortex serve exited with {await process.wait()} before listening")


async def test_the_sdk_talks_to_cortex_serve_and_sigterm_stops_it(tmp_path):
    (tmp_path / "models.toml").write_text(
        '[[models]]\nid = "org/tiny"\nvram_mb = 2000\naliases = ["tiny"]\n', encoding="utf-8"
    )
    async with FakeNeuron(["org/tiny"], token="t0k") as neuron:
        (tmp_path / "token").write_text("t0k\n", encoding="utf-8")
        (tmp_path / "cortex.toml").write_text(
            'models_config = "models.toml"\n'
            "[gateway]\npoll_interval_s = 0.2\n"
            "[auth]\napi_keys = ['client-1']\n"
            f'[[neurons]]\nname = "box"\nendpoint = "{neuron.url}"\ntoken_file = "token"\n',
            encoding="utf-8",
        )
        process, log, url, metrics_url = await start_gateway(tmp_path / "cortex.toml")
        try:
            async with openai.AsyncOpenAI(
                base_url=url + "/v1", api_key="client-1", max_retries=0
            ) as client:
                listed = [m.id async for m in client.models.list()]
                answer = await client.chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": "hi"}]
                )
                stream = await client.chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": "hi"}], stream=True
                )
                text = "".join(
                    [c.choices[0].delta.content or "" async for c in stream if c.choices]
                )
            async with (
                aiohttp.ClientSession() as session,
                session.get(metrics_url + "/metrics") as r,
            ):
                metrics = await r.text()
        finally:
            process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), 30)
            await log
    assert listed == ["org/tiny", "tiny"]
    assert answer.choices[0].message.content == "tok0 tok1 tok2 "
    assert text == "tok0 tok1 tok2 "
    assert [spec.model_id for spec in neuron.loads] == ["org/tiny"]
    assert 'cortex_requests_total{model="org/tiny",node="box",status="200"} 2.0' in metrics
    assert code == 0


async def test_a_bad_config_exits_1_with_the_reason(tmp_path):
    config = tmp_path / "cortex.toml"
    config.write_text("[gateway]\npoll_interval = 2\n", encoding="utf-8")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cortex_cli", "serve", "--config", str(config),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 1
    assert b"gateway.poll_interval: unknown key (did you mean `poll_interval_s`?)" in stderr
