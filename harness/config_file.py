"""``--config run.yaml``: a command's flags read from a YAML file, the command line overriding it.

The file's keys are the command's long flag names without the dashes (``suite``, ``max-new-tokens``; ``_`` may
stand for ``-``), and its values what the flag takes: a list where the flag takes a comma-separated list
(``method: [spring, lora]``), and for ``option`` a list of ``NAME.KEY=VALUE`` strings or a mapping
``{spring: {lr: 0.002}}``. An unknown key, or a value the flag refuses, stops the command before any work, with
the file, the key and a did-you-mean. The values become the flags' defaults (click's ``default_map``), so a flag
typed on the command line wins. The resolved values of every flag, from file, command line or default, are what
:func:`harness.invocation.saved_config` writes beside the run's cells (``<results>/configs/``), so a run started from a file can be
re-run from that record alone.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import typer

from harness.errors import HarnessError
from harness.registry import did_you_mean

CONFIG_KEY = "config"
# click's exceptions: recent typer versions bundle their own copy of click (typer._click), older ones use click.
CLICK_ERRORS: Any = (getattr(typer.main, "_click", None) or importlib.import_module("click")).exceptions


def _flag_names(ctx: Any) -> dict[str, Any]:
    """``{long flag without dashes: click parameter}`` of the command being parsed."""
    names = {}
    for param in ctx.command.params:
        for opt in getattr(param, "opts", ()):
            if opt.startswith("--"):
                names[opt[2:]] = param
    names.pop(CONFIG_KEY, None)
    names.pop("help", None)
    return names


def _flag_value(path: Path, key: str, value: Any, multiple: bool) -> Any:
    """The YAML ``value`` in the form the flag reads it (comma-joined lists, ``NAME.KEY=VALUE`` option strings)."""
    if key == "option" and isinstance(value, dict):
        pairs = []
        for target, options in value.items():
            if not isinstance(options, dict):
                raise HarnessError(
                    f"{path}: option.{target} must map option names to values, e.g. option: {{spring: {{lr: 0.002}}}}"
                )
            pairs += [f"{target}.{name}={_scalar(item)}" for name, item in options.items()]
        return pairs
    if multiple:
        items = value if isinstance(value, list) else [value]
        return [_scalar(item) for item in items]
    if isinstance(value, list):
        return ",".join(_scalar(item) for item in value)
    if isinstance(value, dict):
        raise HarnessError(f"{path}: {key} takes a single value or a list, not a mapping")
    return value


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        raise HarnessError(f"a config list holds plain values, got {value!r}")
    return str(value)


def read_config(ctx: Any, path: Path) -> dict[str, Any]:
    """The flag defaults ``{parameter name: value}`` of the YAML file ``path`` for the command of ``ctx``."""
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise HarnessError(f"--config {path}: cannot read it ({error.strerror}); pass a YAML file that exists") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise HarnessError(f"--config {path}: not valid YAML{where}; fix the file (keys are the flag names)") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise HarnessError(f"--config {path}: expected a mapping of flag names to values, got a {type(loaded).__name__}")
    flags = _flag_names(ctx)
    defaults: dict[str, Any] = {}
    for raw_key, value in loaded.items():
        key = str(raw_key).replace("_", "-")
        if key not in flags:
            raise HarnessError(
                f"--config {path}: unknown key {raw_key!r} for `{ctx.command_path}`.{did_you_mean(key, flags)} "
                f"Keys are its flags without dashes: {', '.join(sorted(flags))}"
            )
        param = flags[key]
        if value is None:
            continue  # `limit:` left empty: the flag's own default
        flag_value = _flag_value(path, key, value, bool(getattr(param, "multiple", False)))
        try:
            param.process_value(ctx, flag_value)  # the flag's own check, said with the file's name
        except CLICK_ERRORS.BadParameter as error:
            raise HarnessError(f"--config {path}: {key}: {' '.join(str(error.message).split())}") from None
        defaults[param.name] = flag_value
    return defaults


def load_config(ctx: typer.Context, param: Any, value: Path | None) -> Path | None:
    """The eager ``--config`` callback: the file's values become the command's flag defaults."""
    if value is not None:
        defaults = read_config(ctx, value)
        ctx.default_map = {**(ctx.default_map or {}), **defaults}
        ctx.meta["harness.config_file"] = value
    return value


CONFIG_OPTION: Any = typer.Option(
    None,
    "--config",
    is_eager=True,
    callback=load_config,
    help="YAML file of this command's flags (keys: flag names without dashes); flags on the command line override it",
)


def resolved_values(ctx: Any) -> dict[str, Any]:
    """Every flag of the running command as the command received it (file, command line or default), YAML-ready."""
    flags: dict[str, str] = {}
    for key, param in _flag_names(ctx).items():
        flags.setdefault(param.name, key)  # a flag's first name (--suite, not its alias --tasks)
    values = {}
    for name, value in ctx.params.items():
        if name not in flags:
            continue
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        elif isinstance(value, tuple):
            value = list(value)
        values[flags[name]] = value
    return values


def resolved_text(ctx: Any) -> str:
    """The YAML record of the running command's resolved flags (a comment line, then one key per flag)."""
    import yaml

    source = ctx.meta.get("harness.config_file")
    header = f"# `{ctx.command_path}` as resolved" + (f" from --config {source}" if source else "") + " and its flags\n"
    return header + yaml.safe_dump(resolved_values(ctx), sort_keys=False, allow_unicode=True)


def record_resolved(ctx: Any) -> None:
    """Keep the running command's resolved flags for :func:`harness.invocation.saved_config` (its cells' provenance)."""
    from harness import invocation

    invocation.record_config(ctx.command.name, resolved_text(ctx))


__all__ = ["CLICK_ERRORS", "CONFIG_OPTION", "load_config", "read_config", "record_resolved", "resolved_values"]
