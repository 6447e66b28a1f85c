"""A Typer group whose sub-apps from higher layers load only when one of them runs.

`productcat --help` lists `api-key` and `db` from a line of text; importing the
service (SQLAlchemy, Alembic, the key store) waits until someone calls them.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

import click
import typer
from typer.core import TyperGroup


class LazyGroup(TyperGroup):
    # name -> (module, Typer attribute, one-line help shown in the listing)
    lazy: ClassVar[dict[str, tuple[str, str, str]]] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *self.lazy]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        if ctx.resilient_parsing:  # shell completion wants the real subcommands
            return self.load(cmd_name)
        return TyperGroup(name=cmd_name, help=self.lazy[cmd_name][2])  # enough for a help listing

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, Any, list[str]]:
        if args and args[0] in self.lazy:
            return args[0], self.load(args[0]), args[1:]
        return super().resolve_command(ctx, args)

    def load(self, cmd_name: str) -> click.Command:
        module, attribute, help_text = self.lazy[cmd_name]
        group = typer.main.get_group(getattr(importlib.import_module(module), attribute))
        group.name = cmd_name
        group.help = group.help or help_text
        return group
