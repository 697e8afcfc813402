"""One declaration per setting: its environment variable, default, bounds and help.

A setting is a dataclass field made by `setting(...)`. From those declarations come the
settings classes' `from_env` (`read`), the bounds' error messages, the CLI's option help
(`help_of`) and the README's table of settings (`table`), so a default is written once.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proto2prod.errors import SettingsError

Values = dict[str, Any]
"""What has been read so far, by field name (a default may follow an earlier setting)."""


@dataclass(frozen=True)
class Declared:
    """What the dataclass field itself cannot say about a setting."""

    env: str | None
    help: str
    at_least: float | None = None
    above: float | None = None
    follows: Callable[[Values], Any] | None = None
    """The default when unset, from settings read before it (e.g. `max(60, poll_s)`)."""
    follows_note: str = ""
    parse: Callable[[str, str], Values] | None = None
    """A variable that sets several fields (`ALIAS:PERCENT`): (env, raw) -> their values."""
    secret: bool = False
    """A token or secret: `proto2prod settings` says whether it is set, never its value."""


def setting(
    env: str | None,
    default: Any,
    help: str,
    *,
    at_least: float | None = None,
    above: float | None = None,
    follows: Callable[[Values], Any] | None = None,
    follows_note: str = "",
    parse: Callable[[str, str], Values] | None = None,
    secret: bool = False,
) -> Any:
    """A settings field declared once (typed as its default's type by the dataclass)."""
    declared = Declared(env, help, at_least, above, follows, follows_note, parse, secret)
    return dataclasses.field(default=default, metadata={"setting": declared})


def declarations(cls: type) -> list[tuple[dataclasses.Field[Any], type, Declared]]:
    """(field, its type without None, its declaration) for each declared field of `cls`."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        declared = f.metadata.get("setting")
        if declared is not None:
            kinds = [t for t in typing.get_args(hints[f.name]) if t is not type(None)]
            out.append((f, kinds[0] if kinds else hints[f.name], declared))
    return out


def read(cls: type, environ: Mapping[str, str], **given: Any) -> Values:
    """The declared fields of `cls` from `environ`, in declaration order; `given` first."""
    values: Values = dict(given)
    for f, kind, declared in declarations(cls):
        if f.name in values:
            continue
        raw = (environ.get(declared.env) or "").strip() if declared.env else ""
        if declared.parse is not None:
            values.update(declared.parse(declared.env or f.name, raw) if raw else {})
            values.setdefault(f.name, f.default)
        elif raw:
            values[f.name] = _parse(kind, declared, str(declared.env), raw, f.default)
        else:
            values[f.name] = declared.follows(values) if declared.follows else f.default
    return values


def environ_of(settings: Any) -> dict[str, str]:
    """The variables that give these settings to another process (the ones that are set)."""
    out = {}
    for f, kind, declared in declarations(type(settings)):
        value = getattr(settings, f.name)
        if declared.env is not None and value is not None and value != f.default:
            out[declared.env] = ("1" if value else "0") if kind is bool else str(value)
    return out


def _parse(kind: type, declared: Declared, key: str, raw: str, default: Any) -> Any:
    if kind is bool:
        return _bool(key, raw)
    if kind is Path:
        return Path(raw).expanduser().absolute()
    if kind is str:
        return raw
    try:
        value = kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise SettingsError(f"{key}={raw!r} is not {what}; set it to e.g. {default}") from None
    floor, strict = _floor(kind, declared)
    if value != value or value < floor or (strict and value == floor):
        raise SettingsError(f"{key}={raw!r} must be {'>' if strict else '>='} {floor:g}")
    return value


def _floor(kind: type, declared: Declared) -> tuple[float, bool]:
    """The lowest value allowed and whether it is itself excluded (floats: > 0 unless said)."""
    if declared.above is not None:
        return declared.above, True
    if declared.at_least is not None:
        return declared.at_least, False
    return 0, kind is float


def _bool(key: str, raw: str) -> bool:
    word = raw.lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{key}={raw!r} is not a boolean; use 1/0, true/false, yes/no or on/off")


def help_of(cls: type, name: str) -> str:
    """A CLI option's help: the declaration's, with its default and bounds."""
    for f, kind, declared in declarations(cls):
        if f.name == name:
            default, bounds = _default_text(f, kind, declared), _bounds_text(kind, declared)
            return f"{declared.help} ({default}{bounds})"
    raise KeyError(name)


def _default_text(f: dataclasses.Field[Any], kind: type, declared: Declared) -> str:
    if declared.follows_note:
        return f"default: {declared.follows_note}"
    if f.default is None:
        return "default: unset"
    if kind is bool:
        return f"default: {'1' if f.default else '0'}"
    return f"default: {f.default:g}" if kind is float else f"default: {f.default}"


def _bounds_text(kind: type, declared: Declared) -> str:
    if kind not in (int, float) or declared.parse is not None:
        return ""
    floor, strict = _floor(kind, declared)
    return f"; {'>' if strict else '>='} {floor:g}"


def table(*classes: type) -> str:
    """The README's table of settings (Markdown), from the declarations."""
    lines = ["| variable | default | what it does |", "|---|---|---|"]
    for cls in classes:
        for f, kind, declared in declarations(cls):
            if declared.env is None:
                continue
            default = _default_text(f, kind, declared).removeprefix("default: ")
            bounds = _bounds_text(kind, declared).removeprefix("; ")
            where = f"{default} ({bounds})" if bounds else default
            lines.append(f"| `{declared.env}` | {where} | {declared.help} |")
    return "\n".join(lines)
