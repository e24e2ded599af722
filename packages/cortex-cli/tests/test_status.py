"""``cortex status`` against a real gateway on loopback in front of fake neurons."""

import re

import aiohttp
import msgspec
import pytest

from cortex_cli import status as status_module, tables
from cortex_core.config import AuthOptions, ModelProfile, ModelsConfig
from cortex_gateway.fleet.views import FleetView
from cortex_gateway.testing import FakeNeuron, fleet_config, running_gateway
from cortex_gateway.testing.models import Admitted
from cortex_gateway.testing.neuron import FakeModel

from .conftest import Cli

pytestmark = pytest.mark.timeout(30)

MODELS = ModelsConfig(models=(ModelProfile(id="org/a", aliases=("a",), pinned_on=("n1",)),))


def _fleet() -> tuple[FakeNeuron, FakeNeuron, FakeNeuron]:
    """n1 up (org/a loaded and busy, org/b loading, org/c loaded), n2 (org/c loaded), n3 down."""
    n1 = FakeNeuron(
        ["org/a", FakeModel("org/b", status="loading", devices=[0], memory_mb=1000), "org/c"],
        loaded=["org/a", "org/c"],
    )
    n1.memory.reserve([0], 1000)  # what org/b's load holds while it runs
    n2 = FakeNeuron(["org/c"], loaded=["org/c"])
    n3 = FakeNeuron()
    n3.poll_status = 500
    return n1, n2, n3


async def test_status_shows_a_fleet_with_a_node_down_one_cordoned_a_load_and_a_shared_model(
    cli: Cli,
) -> None:
    n1, n2, n3 = _fleet()
    async with n1, n2, n3:
        n1.models["org/a"].admitted |= {Admitted(), Admitted()}  # two requests run there
        async with running_gateway(fleet_config(n1, n2, n3), MODELS) as gw:
            cordoned = await cli("nodes", "cordon", "n2", "--url", gw.url)
            result = await cli("status", "--url", gw.url)
    assert cordoned.output == "n2: cordoned\n"
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "2/3 nodes up, 2 models resident (1 loading), 2 requests in flight"
    header = ["NODE", "STATE", "DEVICES", "(used/total)", "CYCLES", "POLLED", "ENDPOINT"]
    assert lines[2].split() == header
    # org/a and org/c (1000 MiB each) loaded, org/b (1000 MiB) loading, on one 24000 MiB device
    assert lines[3].split()[:6] == ["n1", "up", "gpu0", "3000/24000", "MiB", "10%"]
    assert lines[3].endswith(n1.url)
    assert lines[4].split()[:6] == ["n2", "cordoned", "gpu0", "1000/24000", "MiB", "10%"]
    assert lines[5].split()[:5] == ["n3", "down", "-", "0", "never"]
    assert lines[7] == "MODEL  ALIASES  WHERE                 IN FLIGHT  QUEUED  LAST USED  PINNED"
    rows = {line.split()[0]: line for line in lines[8:]}
    assert rows["org/a"].split() == ["org/a", "a", "n1", "loaded", "2", "0", "never", "n1"]
    assert rows["org/b"].split() == ["org/b", "-", "n1", "loading", "0", "0", "never", "-"]
    assert re.split(r"\s{2,}", rows["org/c"]) == [
        "org/c",
        "-",
        "n1 loaded, n2 loaded",
        "0",
        "0",
        "never",
        "-",
    ]


async def test_status_json_is_the_fleet_document(cli: Cli) -> None:
    n1, n2, n3 = _fleet()
    async with n1, n2, n3, running_gateway(fleet_config(n1, n2, n3), MODELS) as gw:
        result = await cli("status", "--json", "--url", gw.url)
        async with aiohttp.ClientSession() as session, session.get(gw.url + "/fleet") as resp:
            direct = msgspec.json.decode(await resp.read(), type=FleetView)
    assert result.exit_code == 0, result.output
    printed = msgspec.json.decode(result.output, type=FleetView)

    def steady(fleet: FleetView) -> FleetView:  # what two polls apart may not share
        nodes = [
            msgspec.structs.replace(n, last_poll=None, consecutive_failures=0) for n in fleet.nodes
        ]
        return msgspec.structs.replace(fleet, nodes=nodes)

    assert steady(printed) == steady(direct)
    assert [n.name for n in printed.nodes] == ["n1", "n2", "n3"]


async def test_status_colours_only_on_a_terminal_without_no_color(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        FakeNeuron(["org/a"], loaded=["org/a"]) as n1,
        running_gateway(fleet_config(n1)) as gw,
    ):
        piped = await cli("status", "--url", gw.url)
        forced = await cli("status", "--url", gw.url, "--color")
        monkeypatch.setattr(tables, "isatty", lambda: True)
        terminal = await cli("status", "--url", gw.url)
        no_color = await cli("status", "--url", gw.url, NO_COLOR="1")
        refused = await cli("status", "--url", gw.url, "--no-color")
    green_up = "\x1b[32mup\x1b[0m"
    assert "\x1b[" not in piped.output
    assert green_up in forced.output
    assert green_up in terminal.output
    assert "\x1b[32mloaded" in terminal.output
    assert "\x1b[" not in no_color.output
    assert "\x1b[" not in refused.output


async def test_status_watch_redraws_until_ctrl_c(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, closed_url: str
) -> None:
    naps: list[float] = []

    def nap(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(status_module, "sleep", nap)
    async with FakeNeuron() as n1, running_gateway(fleet_config(n1)) as gw:
        watched = await cli("status", "-w", "--url", gw.url)
    naps.clear()
    lost = await cli("status", "--watch", "--url", closed_url)
    assert watched.exit_code == 0, watched.output
    assert watched.output.count("1/1 nodes up, 0 models resident, 0 requests in flight") == 2
    assert lost.exit_code == 0
    assert lost.output.count(f"cannot reach the gateway at {closed_url}") == 2
    assert "(retrying)" in lost.output
    assert naps == [1.0, 1.0]


async def test_status_refusals_and_unreachable_gateways(cli: Cli, closed_url: str) -> None:
    async with (
        FakeNeuron() as fake,
        running_gateway(fleet_config(fake, auth=AuthOptions(api_keys=("k1",)))) as gw,
    ):
        refused = await cli("status", "--url", gw.url)
        allowed = await cli("status", CORTEX_URL=gw.url, CORTEX_API_KEY="k1")
        not_a_gateway = await cli("status", "--url", fake.url)
        both = await cli("status", "--json", "--watch", "--url", gw.url)
        async with running_gateway(fleet_config()) as empty_gw:
            empty = await cli("status", "--url", empty_gw.url + "/")
    unreachable = await cli("status", "--url", closed_url)
    assert refused.exit_code == 1
    assert refused.stderr.startswith("Error: the gateway refused the key (401")
    assert "set CORTEX_API_KEY" in refused.stderr
    assert refused.stderr.count("\n") == 1
    assert allowed.exit_code == 0, allowed.output
    assert allowed.output.rstrip().endswith("no models")
    assert not_a_gateway.exit_code == 1
    assert "the gateway answered 404: no route /fleet" in not_a_gateway.stderr
    assert both.exit_code == 2
    assert "--json and --watch do not go together" in both.stderr
    assert empty.output.splitlines()[2] == "no neurons configured"
    assert unreachable.exit_code == 1
    assert (
        unreachable.stderr
        == f"Error: cannot reach the gateway at {closed_url}: "
        + (unreachable.stderr.split(": ", 2)[2])
    )
    assert "Traceback" not in unreachable.output
