"""``cortex config``: write starter files, check a configuration."""

from pathlib import Path

import click
import tomli_w

from cortex_cli.starter import CORTEX_TOML, MODELS_TOML
from cortex_core.config import ConfigError, load_gateway_config, redacted

config_option = click.option(
    "-c",
    "--config",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("cortex.toml"),
    show_default=True,
    help="The gateway's config file.",
)
"""The ``-c/--config`` option of every command that reads cortex.toml."""


@click.group()
def config() -> None:
    """Write and check the gateway's configuration."""


@config.command()
@click.option(
    "-d",
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(),
    show_default="the current folder",
    help="Where to write cortex.toml and models.toml.",
)
@click.option("--force", is_flag=True, help="Overwrite files that exist.")
def init(folder: Path, force: bool) -> None:
    """Write a commented starter cortex.toml and models.toml."""
    files = {folder / "cortex.toml": CORTEX_TOML, folder / "models.toml": MODELS_TOML}
    existing = [str(path) for path in files if path.exists()]
    if existing and not force:
        raise click.ClickException(f"{', '.join(existing)} exists; use --force to overwrite")
    folder.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
        click.echo(f"wrote {path}")


@config.command()
@config_option
def check(path: Path) -> None:
    """Load a config and its models.toml; print the effective configuration, secrets redacted."""
    try:
        gateway, models = load_gateway_config(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"# {path}: effective configuration (secrets redacted)")
    click.echo(tomli_w.dumps(redacted(gateway)))
    click.echo(f"# {gateway.models_config or 'no models_config'}: models: {len(models.models)}")
    click.echo(tomli_w.dumps(redacted(models)), nl=False)
