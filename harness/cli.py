"""The ``harness`` command. Sub-commands live in :mod:`harness.commands`, one module each."""

from __future__ import annotations

import importlib
import sys

import click
import typer

from harness.errors import HarnessError

# Each module exposes register(app); the order is the order of `harness --help`.
COMMAND_MODULES = ("ls", "data", "corpus", "retrieve", "generate", "leaderboard", "plot")

app = typer.Typer(
    name="harness",
    help="Benchmark and evaluation harness for retrieval-augmented LLMs (SPRING and baselines).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _module in COMMAND_MODULES:
    importlib.import_module(f"harness.commands.{_module}").register(app)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors become one line on stderr and exit code 2, never a traceback."""
    try:
        # Without standalone mode click returns the code of a typer.Exit instead of raising it.
        code = app(args=argv, standalone_mode=False)
    except HarnessError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except typer.Exit as done:
        return done.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 1
    except click.ClickException as error:  # usage errors: click's message, exit code 2
        error.show()
        return error.exit_code
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
