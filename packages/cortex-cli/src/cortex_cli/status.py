"""``cortex status``: the gateway's ``/fleet``, as tables an operator can read at a glance."""

import time

import click

from cortex_cli.client import Gateway, GatewayError, gateway_options
from cortex_cli.tables import Paint, ago, color_option, paint, table
from cortex_gateway.fleet.views import FleetView, NodeModelView, NodeView

__all__ = ["render", "status"]

WATCH_INTERVAL_S = 1.0
sleep = time.sleep
"""Between redraws (a seam for the tests, which stop the watch from it)."""


def node_state(node: NodeView) -> str:
    """``down``, ``draining``, ``cordoned`` or ``up`` (the first that holds), and ``defrag due``."""
    if not node.up:
        state = "down"
    elif node.draining:
        state = "draining"
    elif node.cordoned:
        state = "cordoned"
    else:
        state = "up"
    return state + (", defrag due" if node.defrag_due else "")


def _devices(node: NodeView) -> str:
    parts = []
    for d in node.devices:
        used = "?" if d.memory_free_mb is None else str(d.memory_total_mb - d.memory_free_mb)
        util = "" if d.utilization_pct is None else f" {d.utilization_pct}%"
        parts.append(f"{d.kind}{d.index} {used}/{d.memory_total_mb} MiB{util}")
    return ", ".join(parts) or "-"


def _nodes(fleet: FleetView, now: float, colour: Paint) -> str:
    rows = [["NODE", "STATE", "DEVICES (used/total)", "CYCLES", "POLLED", "ENDPOINT"]]
    rows += [
        [
            n.name,
            node_state(n),
            _devices(n),
            str(n.load_unload_cycles),
            ago(n.last_poll, now),
            n.endpoint,
        ]
        for n in fleet.nodes
    ]
    return table(rows, painted=(1,), colour=colour)


def _models(fleet: FleetView, now: float, colour: Paint) -> str:
    on_node = {(n.name, m.id): m for n in fleet.nodes for m in n.models}
    rows = [["MODEL", "ALIASES", "WHERE", "IN FLIGHT", "QUEUED", "LAST USED", "PINNED"]]
    for model in fleet.models:
        infos: list[NodeModelView] = []
        where, pinned = [], []
        for location in model.locations:
            where.append(f"{location.node} {location.status}")
            info = on_node.get((location.node, model.id))
            if info is not None:
                infos.append(info)
                if info.pinned:
                    pinned.append(location.node)
        used = [i.last_used for i in infos if i.last_used is not None]
        rows.append(
            [
                model.id,
                ", ".join(model.aliases) or "-",
                ", ".join(where) or "-",
                str(sum(i.in_flight for i in infos)),
                str(model.queued + sum(i.queued for i in infos)),
                ago(max(used), now) if used else "never",
                ", ".join(pinned) or "-",
            ]
        )
    return table(rows, painted=(2,), colour=colour)


def summary(fleet: FleetView) -> str:
    """One line: nodes up, models resident (and loading), requests in flight."""
    up = sum(n.up for n in fleet.nodes)
    resident = {m.id for n in fleet.nodes for m in n.models if m.status == "loaded"}
    loading = {m.id for n in fleet.nodes for m in n.models if m.status == "loading"}
    in_flight = sum(m.in_flight for n in fleet.nodes for m in n.models)
    more = f" ({len(loading)} loading)" if loading else ""
    return (
        f"{up}/{len(fleet.nodes)} nodes up, {len(resident)} models resident{more}, "
        f"{in_flight} requests in flight"
    )


def render(fleet: FleetView, now: float, colour: Paint = str) -> str:
    """The whole screen: the summary, the nodes, the models."""
    nodes = _nodes(fleet, now, colour) if fleet.nodes else "no neurons configured"
    models = _models(fleet, now, colour) if fleet.models else "no models"
    return f"{summary(fleet)}\n\n{nodes}\n\n{models}"


@click.command()
@gateway_options
@color_option
@click.option("--json", "as_json", is_flag=True, help="Print the /fleet document as JSON.")
@click.option("--watch", "-w", is_flag=True, help="Redraw every second until Ctrl-C.")
def status(gateway: Gateway, color: bool, as_json: bool, watch: bool) -> None:
    """Show the fleet: nodes, devices, models, what is in flight."""
    if as_json and watch:
        raise click.UsageError("--json and --watch do not go together")
    if as_json:
        click.echo(gateway.fleet_document().decode())
        return
    if not watch:
        click.echo(render(gateway.fleet(), time.time(), paint(color)), color=color)
        return
    try:
        while True:
            try:
                screen = render(gateway.fleet(), time.time(), paint(color))
            except GatewayError as exc:
                screen = f"{time.strftime('%H:%M:%S')}  {exc.message} (retrying)"
            click.clear()
            click.echo(screen, color=color)
            sleep(WATCH_INTERVAL_S)
    except KeyboardInterrupt:
        return
