"""The ``neuron`` command: serve, check the config, discover the devices, build the tiny model."""

import asyncio
from collections.abc import Mapping
from pathlib import Path

import click
import msgspec
import tomli_w

from cortex_core import codec
from cortex_core.config import ConfigError, NeuronConfig, load, redacted
from cortex_core.logging import configure
from cortex_neuron import __version__
from cortex_neuron.devices import Devices
from cortex_neuron.engine_args import check_engine_args

_config_option = click.option(
    "-c",
    "--config",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The neuron's config file [default: neuron.toml, or built-in defaults if absent].",
)
_DEFAULT_CONFIG = Path("neuron.toml")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="neuron")
def main() -> None:
    """neuron: the cortex node daemon that embeds vLLM on a GPU host."""


@main.command()
@_config_option
@click.option("--host", help="Overrides `host`.")
@click.option("--port", type=int, help="Overrides `port` (0 picks a free one).")
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text")
def serve(
    path: Path | None, host: str | None, port: int | None, log_level: str, log_format: str
) -> None:
    """Serve the lifecycle and inference API until SIGTERM or SIGINT."""
    from cortex_neuron.app import build_context
    from cortex_neuron.engine import Vllm
    from cortex_neuron.engine.install import check_install
    from cortex_neuron.server import listen, serve as run

    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    config = _load(path, overrides)
    configure(log_level, "json" if log_format == "json" else "text")
    check_install()
    harness = Vllm(config.harness.vllm)
    ctx = build_context(config, harness.start, warmer=harness)
    sock = listen(config)
    asyncio.run(run(ctx, sock))


@main.group()
def config() -> None:
    """Check the neuron's configuration."""


@config.command()
@_config_option
def check(path: Path | None) -> None:
    """Load a config and print the effective configuration, secrets redacted."""
    neuron = _load(path or _DEFAULT_CONFIG, {})
    click.echo(f"# {path or _DEFAULT_CONFIG}: effective configuration (secrets redacted)")
    click.echo(tomli_w.dumps(redacted(neuron)), nl=False)


@main.command()
@_config_option
def discover(path: Path | None) -> None:
    """Print what /discovery reports: the host and its GPUs (or the CPU pool)."""
    config = _load(path, {})
    discovery = Devices.probe(config.harness.vllm).discovery
    click.echo(msgspec.json.format(codec.encode(discovery), indent=2).decode())


@main.command("tiny-model")
@click.argument("model_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--id", "model_id", default="cortex/tiny-chat", show_default=True)
@click.option("--seed", default=0, show_default=True)
def tiny_model(model_dir: Path, model_id: str, seed: int) -> None:
    """Build the tiny test model into MODEL_DIR (needs the [cpu] or [vllm] extra)."""
    from cortex_neuron.tiny import build_tiny_model

    click.echo(str(build_tiny_model(model_dir, model_id, seed=seed)))


def _load(path: Path | None, overrides: Mapping[str, object]) -> NeuronConfig:
    if path is None and _DEFAULT_CONFIG.exists():
        path = _DEFAULT_CONFIG
    try:
        neuron = load(NeuronConfig, path, env_prefix="NEURON", overrides=overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    problems = check_engine_args(neuron)
    if problems:
        raise click.ClickException(f"{path or 'defaults'}: " + "; ".join(problems))
    return neuron
