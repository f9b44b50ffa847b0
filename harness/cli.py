"""The ``harness`` command. Sub-commands live in :mod:`harness.commands`, one module each."""

from __future__ import annotations

import errno
import importlib
import sys

import typer

from harness import invocation
from harness.activity import reporting
from harness.config_file import CLICK_ERRORS
from harness.console import console, rich_reporter
from harness.errors import HarnessError
from harness.verbosity import set_verbosity

# Each module exposes register(app); the order is the order of `harness --help`.
COMMAND_MODULES = (
    "ls",
    "data",
    "corpus",
    "retrieve",
    "generate",
    "train",
    "run",
    "preserve",
    "leaderboard",
    "plot",
    "diff",
    "report",
    "export",
    "export_tokens",
    "store",
)

app = typer.Typer(
    name="harness",
    help="Benchmark and evaluation harness for retrieval-augmented LLMs (SPRING and baselines).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: typer's rich panels show flags as taking a `<bool>` value under click >= 8.2.
    rich_markup_mode=None,
)

_debug = {"on": False}


def _print_version(value: bool) -> None:
    if value:
        from harness import __version__

        print(f"harness {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    debug: bool = typer.Option(False, "--debug", help="show the full traceback of an error (for bug reports)"),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version, help="print the version"),
    verbosity: str = typer.Option(
        "info",
        "--verbosity",
        envvar="HARNESS_VERBOSITY",
        metavar="[info|debug]",
        help="debug: also the libraries' own warnings, logs and progress bars (transformers, PEFT, lm-eval, ...)",
    ),
) -> None:
    _debug["on"] = debug
    set_verbosity(verbosity)


for _module in COMMAND_MODULES:
    importlib.import_module(f"harness.commands.{_module}").register(app)


_CLICK_ERRORS = CLICK_ERRORS

USER_FIXABLE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors become one line on stderr and exit code 2, never a traceback."""
    _debug["on"] = False
    invocation.record(sys.argv[1:] if argv is None else argv)
    try:
        # Not standalone: click's usage errors come back here, to be printed as one line like every other error.
        # Long engine steps (corpus, index, retrieval) draw a bar; a command with its own live display joins it there.
        with reporting(rich_reporter(console())):
            code = app(args=argv, prog_name="harness", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except _CLICK_ERRORS.NoArgsIsHelpError as error:
        print(error.ctx.get_help())  # `harness` or `harness store` alone: the help, as click prints it (exit 2)
        return error.exit_code
    except _CLICK_ERRORS.ClickException as error:
        where = error.ctx.command_path if getattr(error, "ctx", None) is not None else "harness"
        print(f"error: {' '.join(error.format_message().split())}; see `{where} --help`", file=sys.stderr)
        return error.exit_code
    except typer.Abort:
        print("error: interrupted", file=sys.stderr)
        return 130
    except HarnessError as error:
        if _debug["on"]:
            raise
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as error:
        # A disk or permission problem the up-front checks could not see (a full disk, a folder made read-only
        # mid-run): the user fixes the file system, so it is one line too. Anything else is a bug: traceback.
        if error.errno not in USER_FIXABLE_ERRNOS or _debug["on"]:
            raise
        where = f" {error.filename}" if error.filename else ""
        print(f"error: cannot write{where}: {error.strerror}; free space or pick a folder you can write to", file=sys.stderr)
        return 2
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
