"""The ``neuron`` command: the node daemon's entrypoint."""

from pathlib import Path

import click
import tomli_w

from cortex_core.config import ConfigError, NeuronConfig, load, redacted
from cortex_neuron import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="neuron")
def main() -> None:
    """neuron: the cortex node daemon that embeds vLLM on a GPU host."""


@main.group()
def config() -> None:
    """Check the neuron's configuration."""


@config.command()
@click.option(
    "-c",
    "--config",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("neuron.toml"),
    show_default=True,
    help="The neuron's config file.",
)
def check(path: Path) -> None:
    """Load a config and print the effective configuration, secrets redacted."""
    try:
        neuron = load(NeuronConfig, path, env_prefix="NEURON")
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"# {path}: effective configuration (secrets redacted)")
    click.echo(tomli_w.dumps(redacted(neuron)), nl=False)
