"""Typed settings per process, overridable by environment variables and CLI flags.

Each command defines one pydantic-settings class; :func:`add_settings_arguments` turns its fields into
``--flags`` (help text from the field descriptions, naming the env var), and :func:`settings_from_args`
builds the object with the precedence flag > env var > default. Bad values fail before any work starts.

List fields read ``a,b`` from an env var and ``--flag a b`` or ``--flag a,b`` from the command line (see
:func:`split_commas`). A class whose ``profile`` field fills unset fields declares those defaults in a
``PROFILES`` class variable, so ``--help`` shows each profile's value instead of the class default.
:func:`settings_env` writes validated settings back into env vars (for child processes such as uvicorn workers).
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BeforeValidator, SecretStr, ValidationError
from pydantic_settings import BaseSettings, NoDecode

from shared.errors import ConfigError, XModalError

__all__ = [
    "AMP_HELP",
    "Command",
    "FloatList",
    "IntList",
    "PathList",
    "StrList",
    "add_settings_arguments",
    "env_name",
    "run_commands",
    "settings_env",
    "settings_from_args",
    "split_commas",
]

S = TypeVar("S", bound=BaseSettings)

AMP_HELP = ("mixed precision: float16 autocast on CUDA (on there by default); on the CPU the same autocast path in "
            "bfloat16, only when given (--amp; off by default: slower without bfloat16 hardware)")
"""The ``--amp`` help of every command that runs a network (see :func:`shared.device.autocast_dtype`)."""


def env_name(cls: type[BaseSettings], field: str) -> str:
    """The environment variable that sets ``field`` of ``cls``."""
    return f"{cls.model_config.get('env_prefix', '')}{field}".upper()


def split_commas(value: object) -> object:
    """``BeforeValidator`` of list fields: ``"a,b"`` (an env var) and ``["a,b", "c"]`` (flags) -> ``["a", "b", "c"]``.

    Blank items are dropped; anything else (a JSON list, numbers) passes through unchanged.
    """
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list | tuple):
        out: list[object] = []
        for item in value:
            out += [p for p in (v.strip() for v in item.split(",")) if p] if isinstance(item, str) else [item]
        return out
    return value


StrList = Annotated[list[str], NoDecode, BeforeValidator(split_commas)]
"""A list field that reads ``a,b`` from its env var and ``--flag a b`` / ``--flag a,b`` from the command line."""
IntList = Annotated[list[int], NoDecode, BeforeValidator(split_commas)]
FloatList = Annotated[list[float], NoDecode, BeforeValidator(split_commas)]
PathList = Annotated[list[Path], NoDecode, BeforeValidator(split_commas)]


def _is_sequence(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _is_sequence(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_is_sequence(a) for a in typing.get_args(annotation) if a is not type(None))
    return origin in (list, tuple, set, frozenset)


def _is_flag(annotation: Any) -> bool:
    """``bool`` or ``bool | None`` (unset = the command decides): a ``--x / --no-x`` flag."""
    if annotation is bool:
        return True
    args = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    return set(args) == {bool, type(None)}


def _choices(annotation: Any) -> list[str] | None:
    """The allowed values of a ``Literal`` field (also inside ``list[Literal[...]]``), else None."""
    if typing.get_origin(annotation) is typing.Literal:
        return [str(a) for a in typing.get_args(annotation)]
    for arg in typing.get_args(annotation):
        if (found := _choices(arg)) is not None:
            return found
    return None


def _default_shown(cls: type[BaseSettings], name: str) -> str:
    """What ``--help`` says about a field's default: required, the class default, or the value per profile."""
    field = cls.model_fields[name]
    if field.is_required():
        return "required"
    default = field.get_default(call_default_factory=True)
    profiles: dict[str, dict[str, Any]] = getattr(cls, "PROFILES", {})
    if any(name in values for values in profiles.values()):
        per = ", ".join(f"{p} {values.get(name, default)}" for p, values in profiles.items())
        return f"default by --profile: {per}"
    return f"default: {default}"


def add_settings_arguments(parser: argparse.ArgumentParser, cls: type[BaseSettings]) -> None:
    """Add one ``--flag`` per settings field; defaults stay in the settings class."""
    for name, field in cls.model_fields.items():
        flag = "--" + name.replace("_", "-")
        shown = _default_shown(cls, name)
        help_text = f"{field.description or name} [env {env_name(cls, name)}; {shown}]"
        choices = _choices(field.annotation)
        if _is_flag(field.annotation):
            parser.add_argument(flag, dest=name, default=None, action=argparse.BooleanOptionalAction, help=help_text)
        elif _is_sequence(field.annotation):
            parser.add_argument(flag, dest=name, default=None, nargs="+", choices=choices, help=help_text)
        else:
            metavar = None if choices else name.upper()
            parser.add_argument(flag, dest=name, default=None, choices=choices, metavar=metavar, help=help_text)


def settings_from_args(cls: type[S], args: argparse.Namespace) -> S:
    """Build ``cls`` from parsed flags (unset flags fall back to env vars, then defaults).

    Raises:
        ConfigError: naming the flag / env var and the reason, for every invalid value.
    """
    given = {k: v for k, v in vars(args).items() if k in cls.model_fields and v is not None}
    try:
        return cls(**given)
    except ValidationError as e:
        problems = [_problem(cls, err) for err in e.errors()]
        if len(problems) == 1:
            raise ConfigError(f"invalid settings: {problems[0]}") from None
        raise ConfigError("invalid settings:\n  " + "\n  ".join(problems)) from None


def _problem(cls: type[BaseSettings], err: Any) -> str:
    """One validation error as ``--flag / ENV_VAR: reason (got value)``; an error of the whole object (a model
    validator: no field) is its own message, without the settings dict."""
    msg = str(err["msg"]).removeprefix("Value error, ")
    if not err["loc"]:
        return msg
    field = str(err["loc"][0])
    flag = "--" + field.replace("_", "-")
    got = "" if isinstance(err.get("input"), SecretStr) else f" (got {err.get('input')!r})"
    return f"{flag} / {env_name(cls, field)}: {msg}{got}"


def settings_env(settings: BaseSettings) -> dict[str, str]:
    """Env vars that rebuild ``settings`` in another process (``type(settings)()`` there gives equal settings).

    Secrets are written in clear (the child needs them); fields that are None are left out (None is their
    default). List fields are comma-joined where the field splits commas (``NoDecode``), JSON otherwise.

    Raises:
        ConfigError: an item of a comma-separated list contains a comma (it could not be read back).
    """
    cls = type(settings)
    dumped = settings.model_dump(mode="json")
    env: dict[str, str] = {}
    for name, field in cls.model_fields.items():
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
        elif isinstance(value, list | tuple) and NoDecode in field.metadata:
            items = [str(v) for v in dumped[name]]
            if any("," in v for v in items):
                raise ConfigError(f"--{name.replace('_', '-')}: {items} cannot be passed on as a comma-separated "
                                  f"{env_name(cls, name)} (an item contains a comma)")
            text = ",".join(items)
        elif isinstance(dumped[name], list | dict | bool):
            text = json.dumps(dumped[name])
        else:
            text = str(dumped[name])
        env[env_name(cls, name)] = text
    return env


Command = tuple[type[BaseSettings], Callable[[Any], None], str]
"""A subcommand: its settings class, the function run with the settings, its one-line help."""


def run_commands(
    prog: str,
    description: str,
    commands: Mapping[str, Command],
    argv: Sequence[str] | None = None,
    resume_hint: str = "rerun the same command to continue",
) -> int:
    """Parse ``argv`` into one subcommand's settings and run it.

    Returns the exit status: 0, 2 for a clear error (printed without a traceback), 130 on Ctrl-C.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (cls, _, help_text) in commands.items():
        add_settings_arguments(sub.add_parser(name, help=help_text, description=help_text), cls)
    args = parser.parse_args(argv)
    cls, run, _ = commands[args.command]
    try:
        run(settings_from_args(cls, args))
    except (XModalError, FileNotFoundError, KeyError) as e:
        print(f"{prog} {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog} {args.command}: interrupted; {resume_hint}", file=sys.stderr)
        return 130
    return 0
