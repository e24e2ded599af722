"""``cortex models``: the fleet's catalogue, merged from ``/fleet`` and ``/v1/models``.

``/fleet`` knows each model's aliases and every node that has it; ``/v1/models`` says which of
them the fleet can serve now and their ``max_model_len``. One row per model, its aliases folded in.
"""

import click
import msgspec

from cortex_cli.client import Gateway, gateway_options
from cortex_cli.tables import color_option, paint, table
from cortex_core.wire.models import ModelCard, ModelList, ModelLocation
from cortex_gateway.fleet.views import FleetView

__all__ = ["CatalogueEntry", "catalogue", "models"]


class CatalogueEntry(msgspec.Struct, kw_only=True, frozen=True):
    """One model of ``cortex models --json``."""

    id: str
    aliases: list[str]
    locations: list[ModelLocation]
    max_model_len: int | None
    servable: bool
    """Listed by ``/v1/models``: loaded or loading somewhere, or loadable on a healthy node."""


def catalogue(fleet: FleetView, listing: ModelList) -> list[CatalogueEntry]:
    """Every model ``/fleet`` knows, with what ``/v1/models`` says of it."""
    cards: dict[str, ModelCard] = {card.id: card for card in listing.data}
    entries = []
    for model in fleet.models:
        card = cards.get(model.id)
        entries.append(
            CatalogueEntry(
                id=model.id,
                aliases=model.aliases,
                locations=model.locations,
                max_model_len=card.max_model_len if card else None,
                servable=card is not None,
            )
        )
    return entries


def _where(entry: CatalogueEntry) -> str:
    resident = [f"{loc.node} {loc.status}" for loc in entry.locations if loc.status != "available"]
    loadable = [loc.node for loc in entry.locations if loc.status == "available"]
    parts = resident + ([f"loadable on {', '.join(loadable)}"] if loadable else [])
    if not entry.servable:
        parts.append("not servable now")
    return "; ".join(parts) or "-"


@click.command()
@gateway_options
@color_option
@click.option("--json", "as_json", is_flag=True, help="Print the catalogue as JSON.")
def models(gateway: Gateway, color: bool, as_json: bool) -> None:
    """List the models: aliases, where resident or loadable, max_model_len."""
    entries = catalogue(gateway.fleet(), gateway.models())
    if as_json:
        click.echo(msgspec.json.encode(entries).decode())
        return
    if not entries:
        click.echo("no models")
        return
    rows = [["MODEL", "ALIASES", "WHERE", "MAX LEN"]]
    rows += [
        [
            e.id,
            ", ".join(e.aliases) or "-",
            _where(e),
            "-" if e.max_model_len is None else str(e.max_model_len),
        ]
        for e in entries
    ]
    click.echo(table(rows, painted=(2,), colour=paint(color)), color=color)
