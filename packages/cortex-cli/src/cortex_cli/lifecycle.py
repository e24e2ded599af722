"""``cortex load`` and ``cortex unload``: the gateway's admin routes, with a load's live progress.

The gateway's ``POST /admin/models/load`` answers once the model is loaded; while it is under
way the CLI polls ``/fleet`` and reports the model's state on its node. On a terminal that is
one line, redrawn; otherwise one line per change of state (logs and CI read those).
"""

import concurrent.futures
import threading
import time
from collections.abc import Callable

import click

from cortex_cli import tables
from cortex_cli.client import Gateway, GatewayError, gateway_options
from cortex_gateway.fleet.views import FleetView
from cortex_gateway.routes import AdminLoaded

__all__ = ["landed", "load", "model_state", "unload"]

POLL_S = 0.1
"""How often ``/fleet`` is read while a load is under way (the gateway answers from memory)."""


def model_state(fleet: FleetView, model: str, node: str | None) -> str:
    """Where ``model`` (an id or an alias) stands: ``n1 loading``, ``n1 loaded``, ``waiting``.

    With ``node``, its state there; without, the nodes where it is loading, else loaded.
    """
    model_id = next((m.id for m in fleet.models if model in (m.id, *m.aliases)), model)
    states = {n.name: m.status for n in fleet.nodes for m in n.models if m.id == model_id}
    if node is not None:
        return f"{node} {states.get(node, 'waiting')}"
    for wanted in ("loading", "loaded"):
        where = sorted(name for name, status in states.items() if status == wanted)
        if where:
            return f"{', '.join(where)} {wanted}"
    return "waiting for a node"


def landed(answer: AdminLoaded) -> list[str]:
    """The load's last words: where it landed, the time it took, what was evicted for it."""
    lines = [f"loaded {answer.model} on {answer.node} in {answer.seconds:.1f} s"]
    lines += [f"evicted {e.model} from {e.node}" for e in answer.evicted]
    return lines


class _Reporter:
    """Says the state as it changes: one redrawn line on a TTY, else a line per change."""

    def __init__(self, model: str, tty: bool) -> None:
        self.model = model
        self.tty = tty
        self.last: str | None = None

    def show(self, state: str, elapsed: float) -> None:
        line = f"loading {self.model}: {state} ({elapsed:.1f} s)"
        if self.tty:
            click.echo(f"\r\x1b[K{line}", nl=False, color=True)
        elif state != self.last:
            click.echo(line)
        self.last = state

    def close(self) -> None:
        if self.tty and self.last is not None:
            click.echo("\r\x1b[K", nl=False, color=True)


def _in_background(
    call: Callable[[], AdminLoaded],
) -> "concurrent.futures.Future[AdminLoaded]":
    """Run ``call`` in a daemon thread: a ``--no-wait`` exit must not wait for it."""
    future: concurrent.futures.Future[AdminLoaded] = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(call())
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread as is
            future.set_exception(exc)

    threading.Thread(target=run, name="cortex-load", daemon=True).start()
    return future


def _failed(model: str, exc: GatewayError) -> GatewayError:
    if exc.status in (None, 401, 403) or exc.code in ("model_not_found", "not_found"):
        return exc
    return GatewayError(f"loading {model} failed: {exc.message}", status=exc.status, code=exc.code)


@click.command()
@gateway_options
@click.argument("model")
@click.option("--node", help="Load it on this node (default: where placement says).")
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait for the load to finish, or return once the gateway has started it.",
)
@click.option("--force", is_flag=True, help="Load even where free memory looks short.")
def load(gateway: Gateway, model: str, node: str | None, wait: bool, force: bool) -> None:
    """Load MODEL (an id or alias) with live progress; say where it landed."""
    tty = tables.isatty()
    reporter = _Reporter(model, tty)
    started = time.monotonic()
    future = _in_background(lambda: gateway.load(model, node, force=force))
    try:
        # Wait a moment before the first draw: a refusal comes at once, with no progress to show.
        while not concurrent.futures.wait([future], timeout=POLL_S).done:
            try:
                state = model_state(gateway.fleet(), model, node)
            except GatewayError:
                state = reporter.last or "waiting"  # the load's own answer says what is wrong
            if not wait and state.endswith((" loading", " loaded")):
                reporter.close()
                click.echo(f"{model}: {state}; the gateway finishes the load (cortex status)")
                return
            reporter.show(state, time.monotonic() - started)
    except KeyboardInterrupt:
        reporter.close()
        click.echo(f"stopped waiting; the gateway goes on loading {model}", err=True)
        raise click.exceptions.Exit(130) from None
    reporter.close()
    try:
        answer = future.result()
    except GatewayError as exc:
        raise _failed(model, exc) from exc
    for line in landed(answer):
        click.echo(line)


@click.command()
@gateway_options
@click.argument("model")
@click.option("--node", help="Unload it from this node only (default: from every node).")
@click.option("--force", is_flag=True, help="Abort its requests in flight.")
@click.option("--drain", is_flag=True, help="Stop admitting and wait for its requests in flight.")
def unload(gateway: Gateway, model: str, node: str | None, force: bool, drain: bool) -> None:
    """Unload MODEL; busy is refused unless --drain or --force."""
    if force and drain:
        raise click.UsageError("--force aborts the requests --drain would wait for: choose one")
    answer = gateway.unload(model, node, force=force, drain=drain)
    click.echo(f"unloaded {answer.model} from {', '.join(answer.nodes)}")
