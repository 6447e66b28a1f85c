"""Logging configured once per entry point (CLI, DAG task, API process)."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler

_configured = False


def configure_logging(level: str = "INFO") -> None:
    """Route every library logger through one rich handler; safe to call twice."""
    global _configured
    if _configured:
        logging.getLogger().setLevel(level.upper())
        return
    logging.basicConfig(
        level=level.upper(),
        format="%(name)s: %(message)s",
        datefmt="[%X]",
        # stderr, so a command's own output on stdout (e.g. --json) stays parseable.
        handlers=[RichHandler(console=Console(stderr=True), rich_tracebacks=True, show_path=False)],
    )
    _configured = True
