"""``cortex nodes cordon|uncordon|drain NODE``: steer where the gateway places new loads."""

import click

from cortex_cli.client import Gateway, NodeAction, gateway_options

__all__ = ["nodes"]


@click.group()
def nodes() -> None:
    """Cordon, drain or uncordon a node (where new loads may go)."""


def _steer(action: NodeAction, doc: str) -> click.Command:
    @gateway_options
    @click.argument("node")
    def command(gateway: Gateway, node: str) -> None:
        answer = gateway.steer(node, action)
        state = "draining" if answer.draining else "cordoned" if answer.cordoned else "uncordoned"
        click.echo(f"{answer.node}: {state}")

    command.__doc__ = doc
    return click.command(action)(command)


nodes.add_command(_steer("cordon", "Place no new loads on NODE (its models keep serving)."))
nodes.add_command(_steer("uncordon", "Undo a cordon or a drain of NODE."))
nodes.add_command(_steer("drain", "Cordon NODE and unload its models as they go idle."))
