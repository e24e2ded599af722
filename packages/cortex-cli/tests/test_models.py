"""``cortex models`` and ``cortex nodes`` against a real gateway."""

import re

import msgspec
import pytest

from cortex_cli.models import CatalogueEntry
from cortex_cli.tables import ago
from cortex_core.config import ModelProfile, ModelsConfig
from cortex_gateway.testing import FakeNeuron, fleet_config, running_gateway
from cortex_gateway.testing.neuron import FakeModel

from .conftest import Cli

pytestmark = pytest.mark.timeout(30)

MODELS = ModelsConfig(
    models=(
        ModelProfile(id="org/a", aliases=("a", "first")),
        ModelProfile(id="org/huge", vram_mb=999_999),
    )
)


async def test_models_merges_the_fleet_and_the_model_list(cli: Cli) -> None:
    async with (
        FakeNeuron(
            [FakeModel("org/a", max_model_len=8192), "org/b", "org/huge"], loaded=["org/a"]
        ) as n1,
        FakeNeuron(["org/a", "org/b"]) as n2,
        running_gateway(fleet_config(n1, n2), MODELS) as gw,
    ):
        table = await cli("models", "--url", gw.url)
        as_json = await cli("models", "--json", "--url", gw.url)
    assert table.exit_code == 0, table.output
    rows = [re.split(r"\s{2,}", line) for line in table.output.splitlines()]
    assert rows[0] == ["MODEL", "ALIASES", "WHERE", "MAX LEN"]
    by_id = {row[0]: row for row in rows[1:]}
    assert by_id["org/a"] == ["org/a", "a, first", "n1 loaded; loadable on n2", "8192"]
    assert by_id["org/b"] == ["org/b", "-", "loadable on n1, n2", "-"]
    assert by_id["org/huge"] == ["org/huge", "-", "loadable on n1; not servable now", "-"]
    entries = msgspec.json.decode(as_json.output, type=list[CatalogueEntry])
    assert {e.id: (e.servable, e.max_model_len) for e in entries} == {
        "org/a": (True, 8192),
        "org/b": (True, None),
        "org/huge": (False, None),
    }


async def test_models_of_an_empty_fleet_and_an_unreachable_gateway(
    cli: Cli, closed_url: str
) -> None:
    async with running_gateway(fleet_config()) as gw:
        empty = await cli("models", "--url", gw.url)
    lost = await cli("models", "--url", closed_url)
    assert empty.output == "no models\n"
    assert lost.exit_code == 1
    assert lost.stderr.startswith(f"Error: cannot reach the gateway at {closed_url}: ")


async def test_nodes_cordon_drain_uncordon_and_an_unknown_node(cli: Cli) -> None:
    async with FakeNeuron() as n1, running_gateway(fleet_config(n1)) as gw:
        cordon = await cli("nodes", "cordon", "n1", "--url", gw.url)
        drain = await cli("nodes", "drain", "n1", "--url", gw.url)
        draining = await cli("status", "--url", gw.url)
        uncordon = await cli("nodes", "uncordon", "n1", "--url", gw.url)
        unknown = await cli("nodes", "cordon", "n9", "--url", gw.url)
    assert [cordon.output, drain.output, uncordon.output] == [
        "n1: cordoned\n",
        "n1: draining\n",
        "n1: uncordoned\n",
    ]
    assert draining.output.splitlines()[3].split()[:2] == ["n1", "draining"]
    assert unknown.exit_code == 1
    assert unknown.stderr == "Error: no such node: No node is named 'n9'\n"


def test_ages_read_in_seconds_minutes_hours() -> None:
    assert [ago(None, 0), ago(10.4, 20), ago(0, 600), ago(0, 3 * 3600), ago(30, 20)] == [
        "never",
        "10 s ago",
        "10 min ago",
        "3 h ago",
        "0 s ago",
    ]
