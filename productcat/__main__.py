"""`python -m productcat ...`, the same as the `productcat` console script."""

from productcat.cli import app

app(prog_name="productcat")
