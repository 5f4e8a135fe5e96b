"""`ctxzip train ...`: one group for every small model ctxzip trains and ships.

Trainers live beside the method they train (`compressors/<family>/train.py`) and are
found through the `ctxzip.trainers` entry-point group, the same way a third-party
package adds its own. Each is imported only when it runs (training pulls in torch
and teacher models).
"""

from __future__ import annotations

from importlib.metadata import entry_points

import click

GROUP = "ctxzip.trainers"


def _trainers() -> dict[str, str]:
    """Subcommand name -> "module:attr" of its click command."""
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


class _LazyTrainers(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *_trainers()])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = [ep for ep in entry_points(group=GROUP) if ep.name == cmd_name]
        if not found:
            return super().get_command(ctx, cmd_name)
        command = found[0].load()
        if not isinstance(command, click.Command):
            raise TypeError(f"{found[0].value} is not a click command")
        return command


@click.group("train", cls=_LazyTrainers)
def train_command() -> None:
    """Rebuild the small trained weights ctxzip ships (bounded CPU runs)."""
