"""``python -m streaming run|publish|tail``."""

from streaming.cli import app

app()
