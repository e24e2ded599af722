"""The ``cortex`` command group; each subcommand lives in the module named after it."""

import click

from cortex_cli import __version__
from cortex_cli.config import config
from cortex_cli.lifecycle import load, unload
from cortex_cli.models import models
from cortex_cli.nodes import nodes
from cortex_cli.serve import serve
from cortex_cli.status import status


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cortex")
def main() -> None:
    """cortex: one OpenAI + Anthropic API in front of a fleet of GPU hosts."""


main.add_command(config)
main.add_command(serve)
main.add_command(status)
main.add_command(models)
main.add_command(load)
main.add_command(unload)
main.add_command(nodes)
