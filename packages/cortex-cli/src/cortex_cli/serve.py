"""``cortex serve``: run the gateway in the foreground until SIGTERM or SIGINT.

Flags override the config file, which overrides the defaults (DESIGN §5). A config error or an
address that cannot be bound is a one-line message and exit status 1, before anything starts.
"""

import asyncio
import logging
import signal
from pathlib import Path

import click

from cortex_cli.config import config_option
from cortex_core.config import ConfigError, GatewayConfig, ModelsConfig, load_gateway_config
from cortex_core.logging import configure
from cortex_gateway.server import Listeners, bind, serve as serve_gateway


async def _run(config: GatewayConfig, models: ModelsConfig, listeners: Listeners) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve_gateway(config, models, listeners, stop.wait)


@click.command()
@config_option
@click.option("--listen", metavar="HOST:PORT", help="The client API's address ([gateway] listen).")
@click.option(
    "--metrics-listen", metavar="HOST:PORT", help="/metrics' address ([gateway] metrics_listen)."
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
)
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option(
    "--access-log/--no-access-log",
    default=True,
    show_default=True,
    help="Log each request (at info, logger cortex_gateway.access).",
)
def serve(
    path: Path,
    listen: str | None,
    metrics_listen: str | None,
    log_level: str,
    log_format: str,
    access_log: bool,
) -> None:
    """Run the gateway: the OpenAI API on `listen`, Prometheus /metrics on `metrics_listen`."""
    flags = {"gateway.listen": listen, "gateway.metrics_listen": metrics_listen}
    try:
        config, models = load_gateway_config(
            path, overrides={key: value for key, value in flags.items() if value is not None}
        )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    configure(log_level, "json" if log_format == "json" else "text")
    if not access_log:
        logging.getLogger("cortex_gateway.access").setLevel(logging.WARNING)
    try:
        listeners = bind(config.gateway)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {exc.strerror}") from exc
    try:
        asyncio.run(_run(config, models, listeners))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        listeners.close()
