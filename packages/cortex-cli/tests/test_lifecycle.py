"""``cortex load`` and ``cortex unload`` through a real gateway's admin routes."""

import asyncio
import http.server
import re
import sys
import threading
from pathlib import Path

import aiohttp
import msgspec
import pytest
from click.testing import CliRunner

from cortex_cli import lifecycle, tables
from cortex_cli.client import GatewayError
from cortex_cli.lifecycle import landed, model_state
from cortex_cli.main import main
from cortex_core.config import AuthOptions, ModelProfile, ModelsConfig
from cortex_gateway.fleet.views import FleetView
from cortex_gateway.routes import AdminLoaded, Eviction
from cortex_gateway.testing import FakeNeuron, eventually, fleet_config, running_gateway
from cortex_gateway.testing.models import Admitted

from .conftest import Cli

pytestmark = pytest.mark.timeout(30)

MODELS = ModelsConfig(models=(ModelProfile(id="org/alpha", aliases=("alpha",)),))
CORTEX = Path(sys.executable).with_name("cortex")


async def _fleet(url: str) -> FleetView:
    async with aiohttp.ClientSession() as session, session.get(url + "/fleet") as resp:
        return msgspec.json.decode(await resp.read(), type=FleetView)


async def test_load_through_the_console_script_reports_each_state_then_where_and_how_long() -> None:
    async with FakeNeuron(["org/alpha", "org/beta"]) as n1:
        n1.load_time = 1.0  # long enough for the 100 ms progress polls to see it loading
        async with running_gateway(fleet_config(n1), MODELS) as gw:
            proc = await asyncio.create_subprocess_exec(
                str(CORTEX),
                "load",
                "alpha",
                "--node",
                "n1",
                "--url",
                gw.url,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    states = [re.sub(r" \(\d+\.\d s\)$", "", line) for line in lines[:-1]]
    # One line per state seen; the first poll may already find it loading.
    assert states[-1] == "loading alpha: n1 loading", lines
    assert states[:-1] in ([], ["loading alpha: n1 available"]), lines
    assert re.fullmatch(r"loaded org/alpha on n1 in \d+\.\d s", lines[-1]), lines
    assert err == b""


async def test_load_without_a_node_follows_placement_and_redraws_one_line_on_a_tty(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tables, "isatty", lambda: True)
    async with FakeNeuron(["org/alpha"]) as n1:
        n1.load_time = 0.5
        async with running_gateway(fleet_config(n1), MODELS) as gw:
            result = await cli("load", "org/alpha", "--url", gw.url)
    assert result.exit_code == 0, result.output
    drawn, last = result.output.rsplit("\r\x1b[K", 1)
    assert "\n" not in drawn  # every progress draw overwrote the one line
    assert "\r\x1b[Kloading org/alpha: n1 loading (" in drawn
    assert re.fullmatch(r"loaded org/alpha on n1 in \d+\.\d s\n", last)


async def test_load_no_wait_returns_once_loading_and_the_gateway_finishes(cli: Cli) -> None:
    async with FakeNeuron(["org/alpha"]) as n1:
        n1.load_time = 1.0
        async with running_gateway(fleet_config(n1), MODELS) as gw:
            result = await cli("load", "alpha", "--no-wait", "--url", gw.url)

            async def loaded() -> bool:
                fleet = await _fleet(gw.url)
                return model_state(fleet, "alpha", None) == "n1 loaded"

            await eventually(loaded)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == (
        "alpha: n1 loading; the gateway finishes the load (cortex status)"
    )


def test_the_last_words_of_a_load_name_what_was_evicted() -> None:
    # The gateway's eviction is another branch's; its answer's `evicted` is already typed.
    answer = AdminLoaded(
        model="org/big",
        node="n2",
        seconds=12.345,
        evicted=[Eviction(model="org/old", node="n2"), Eviction(model="org/older", node="n2")],
    )
    assert landed(answer) == [
        "loaded org/big on n2 in 12.3 s",
        "evicted org/old from n2",
        "evicted org/older from n2",
    ]


class _EvictingGateway(http.server.BaseHTTPRequestHandler):
    """A stand-in for a gateway whose placement evicts (that work is on another branch)."""

    FLEET = FleetView(nodes=[], models=[])
    ANSWER = AdminLoaded(
        model="org/big", node="n2", seconds=3.25, evicted=[Eviction(model="org/old", node="n2")]
    )

    def do_GET(self) -> None:
        self._send(self.FLEET)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self._send(self.ANSWER)

    def _send(self, obj: object) -> None:
        body = msgspec.json.encode(obj)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_load_prints_what_the_gateway_evicted_to_make_room() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EvictingGateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = CliRunner().invoke(main, ["load", "org/big", "--url", url])
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-2:] == [
        "loaded org/big on n2 in 3.2 s",
        "evicted org/old from n2",
    ]


def test_model_state_names_the_nodes_it_is_loading_or_loaded_on() -> None:
    fleet = msgspec.json.decode(
        b'{"nodes": [{"name": "n1", "endpoint": "e", "up": true, "last_poll": null,'
        b' "consecutive_failures": 0, "load_unload_cycles": 0, "defrag_due": false,'
        b' "cordoned": false, "draining": false, "devices": [],'
        b' "models": [{"id": "org/a", "status": "loaded"}]}],'
        b' "models": [{"id": "org/a", "aliases": ["a"], "locations": []}]}',
        type=FleetView,
    )
    assert model_state(fleet, "a", None) == "n1 loaded"
    assert model_state(fleet, "org/a", "n2") == "n2 waiting"
    assert model_state(fleet, "org/b", None) == "waiting for a node"


async def test_load_failures_are_one_line_with_the_reason(cli: Cli, closed_url: str) -> None:
    async with FakeNeuron(["org/alpha", "org/beta"]) as n1:
        n1.load_failures["org/beta"] = (507, "out_of_memory")
        async with running_gateway(fleet_config(n1), MODELS) as gw:
            refused = await cli("load", "org/beta", "--node", "n1", "--url", gw.url)
            typo = await cli("load", "org/alpah", "--url", gw.url)
            no_node = await cli("load", "org/alpha", "--node", "n9", "--url", gw.url)
            no_wait = await cli("load", "org/beta", "--no-wait", "--url", gw.url)
    lost = await cli("load", "org/alpha", "--url", closed_url)
    usage = await cli("load")
    assert refused.exit_code == 1
    assert refused.stderr.startswith("Error: loading org/beta failed: ")
    assert "fake refusal: out_of_memory" in refused.stderr
    assert no_wait.exit_code == 1
    assert "fake refusal: out_of_memory" in no_wait.stderr
    assert typo.exit_code == 1
    assert typo.stderr.rstrip().endswith("did you mean org/alpha?")
    assert typo.stdout == ""  # refused at once: no progress drawn
    assert no_node.exit_code == 1
    assert no_node.stderr.startswith("Error: no such node: ")
    assert "'n9'" in no_node.stderr
    assert lost.exit_code == 1
    assert f"cannot reach the gateway at {closed_url}" in lost.stderr
    assert usage.exit_code == 2
    assert "Missing argument 'MODEL'" in usage.stderr
    for result in (refused, typo, no_node, lost, no_wait):
        assert result.stderr.count("\n") == 1, result.stderr
        assert "Traceback" not in result.output


async def test_unload_from_every_node_one_node_and_with_drain(cli: Cli) -> None:
    async with (
        FakeNeuron(["org/alpha"], loaded=["org/alpha"]) as n1,
        FakeNeuron(["org/alpha", "org/beta"], loaded=["org/alpha", "org/beta"]) as n2,
    ):
        n2.models["org/beta"].admitted.add(Admitted())  # a request runs there
        async with running_gateway(fleet_config(n1, n2), MODELS) as gw:
            busy = await cli("unload", "org/beta", "--url", gw.url)
            drained = await cli("unload", "alpha", "--node", "n2", "--drain", "--url", gw.url)
            everywhere = await cli("unload", "org/alpha", "--url", gw.url)
            forced = await cli("unload", "org/beta", "--force", "--url", gw.url)
            gone = await cli("unload", "org/alpah", "--url", gw.url)
    both = await cli("unload", "x", "--force", "--drain")
    assert busy.exit_code == 1
    assert busy.stderr.startswith("Error: the gateway answered 409: ")
    assert drained.output == "unloaded org/alpha from n2\n"
    assert everywhere.output == "unloaded org/alpha from n1\n"
    assert forced.output == "unloaded org/beta from n2\n"
    assert [(u.model_id, u.drain, u.force) for u in n2.unloads] == [
        ("org/beta", False, False),
        ("org/alpha", True, False),
        ("org/beta", False, True),
    ]
    assert gone.exit_code == 1
    assert gone.stderr.rstrip().endswith("did you mean org/alpha?")
    assert both.exit_code == 2
    assert "choose one" in both.stderr


async def test_admin_commands_say_which_key_to_set(cli: Cli) -> None:
    auth = AuthOptions(api_keys=("client",), admin_keys=("admin",))
    async with FakeNeuron(["org/alpha"]) as n1, running_gateway(fleet_config(n1, auth=auth)) as gw:
        nokey = await cli("unload", "org/alpha", "--url", gw.url)
        client = await cli("load", "org/alpha", "--url", gw.url, CORTEX_API_KEY="client")
        admin = await cli("nodes", "cordon", "n1", "--url", gw.url, "--api-key", "admin")
    assert nokey.exit_code == 1
    assert "(401" in nokey.stderr
    assert "set CORTEX_API_KEY (or --api-key) to an admin key" in nokey.stderr
    assert client.exit_code == 1
    assert "(403" in client.stderr
    assert "admin routes need an admin key" in client.stderr
    assert admin.output == "n1: cordoned\n"


async def test_ctrl_c_during_a_load_leaves_it_to_the_gateway(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    polls: list[str] = []

    def interrupted(fleet: FleetView, model: str, node: str | None) -> str:
        polls.append(model)
        if len(polls) == 1:
            raise GatewayError("the gateway went away for a moment")
        raise KeyboardInterrupt

    monkeypatch.setattr(lifecycle, "model_state", interrupted)
    async with FakeNeuron(["org/alpha"]) as n1:
        n1.load_time = 1.0
        async with running_gateway(fleet_config(n1), MODELS) as gw:
            result = await cli("load", "org/alpha", "--url", gw.url)

            async def loaded() -> bool:
                return n1.models["org/alpha"].status == "loaded"

            await eventually(loaded)
    assert result.exit_code == 130
    assert result.stderr == "stopped waiting; the gateway goes on loading org/alpha\n"
    assert result.stdout.startswith("loading org/alpha: waiting (")
