"""`harness generate`: filled in by its issue."""

import typer


def register(app: typer.Typer) -> None:
    """Mount this command on ``app``."""
