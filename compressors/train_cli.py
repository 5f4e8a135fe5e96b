"""`ctxzip train ...`: one group for every small model ctxzip trains and ships.

Each trainer is a subcommand imported only when it runs (training pulls in torch and
the teacher models); add a line to `TRAINERS` to register another.
"""

from __future__ import annotations

import importlib

import click

# subcommand -> "module:attr" of a click command
TRAINERS: dict[str, str] = {
    "token-classifier": "ctxzip.compressors.train_token_classifier:token_classifier_command",
    "xrag": "ctxzip.compressors.xrag_train:xrag_command",
    "llava": "ctxzip.compressors.vision_reader_train:llava_command",
}


class _LazyTrainers(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *TRAINERS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = TRAINERS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


@click.group("train", cls=_LazyTrainers)
def train_command() -> None:
    """Rebuild the small trained weights ctxzip ships (bounded CPU runs)."""
