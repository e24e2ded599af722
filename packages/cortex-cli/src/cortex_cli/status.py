"""``cortex status``: the gateway's ``/fleet``, as tables an operator can read at a glance."""

import json
import time
import urllib.error
import urllib.request

import click
import msgspec

from cortex_gateway.fleet.views import FleetView, NodeView


def _fetch(url: str, api_key: str | None) -> FleetView:
    request = urllib.request.Request(url.rstrip("/") + "/fleet")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            body = answer.read()
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        raise click.ClickException(f"the gateway answered {exc.code}: {message}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise click.ClickException(f"cannot reach the gateway at {url}: {reason}") from exc
    try:
        return msgspec.json.decode(body, type=FleetView)
    except msgspec.DecodeError as exc:
        raise click.ClickException(f"{url}/fleet is not a cortex gateway's answer: {exc}") from exc


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _state(node: NodeView) -> str:
    state = "draining" if node.draining else "up" if node.up else "down"
    return state + (", defrag due" if node.defrag_due else "")


def _devices(node: NodeView) -> str:
    parts = []
    for d in node.devices:
        free = "?" if d.memory_free_mb is None else str(d.memory_free_mb)
        util = "" if d.utilization_pct is None else f" {d.utilization_pct}%"
        parts.append(f"{d.kind}{d.index} {free}/{d.memory_total_mb} MiB free{util}")
    return ", ".join(parts) or "-"


def _ago(moment: float | None, now: float) -> str:
    return "never" if moment is None else f"{max(0.0, now - moment):.0f} s ago"


@click.command()
@click.option(
    "--url",
    envvar="CORTEX_URL",
    default="http://127.0.0.1:31313",
    show_default=True,
    help="The gateway (or set CORTEX_URL).",
)
@click.option("--api-key", envvar="CORTEX_API_KEY", help="A client key (or set CORTEX_API_KEY).")
def status(url: str, api_key: str | None) -> None:
    """Show the fleet: each node's state, devices and models, and where each model is."""
    fleet = _fetch(url, api_key)
    now = time.time()
    nodes = [["NODE", "STATE", "DEVICES", "CYCLES", "POLLED", "ENDPOINT"]]
    nodes += [
        [
            n.name,
            _state(n),
            _devices(n),
            str(n.load_unload_cycles),
            _ago(n.last_poll, now),
            n.endpoint,
        ]
        for n in fleet.nodes
    ]
    click.echo(_table(nodes) if fleet.nodes else "no neurons configured")
    in_flight = {(n.name, m.id): m for n in fleet.nodes for m in n.models}
    models = [["MODEL", "ALIASES", "WHERE"]]
    for model in fleet.models:
        where = []
        for location in model.locations:
            info = in_flight.get((location.node, model.id))
            busy = f", {info.in_flight} in flight" if info and info.in_flight else ""
            pin = ", pinned" if info and info.pinned else ""
            where.append(f"{location.node} ({location.status}{busy}{pin})")
        models.append([model.id, ", ".join(model.aliases) or "-", "; ".join(where) or "-"])
    click.echo()
    click.echo(_table(models) if fleet.models else "no models")
