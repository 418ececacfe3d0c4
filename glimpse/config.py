"""Config dataclasses with a help text per field, and the command-line options made from them.

Every component's settings are one frozen dataclass whose fields are declared with
:func:`option`. The command line is generated from those fields (:func:`add_options`,
:func:`from_options`), so a setting is named, defaulted and documented in exactly one place.
Each dataclass also checks its values when it is made (:func:`check_fields` for types and
choices, :func:`check_at_least` and :func:`check_positive` for ranges), so a config file or a
call from Python gets the same one-line errors as the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import numbers
import os
import types
import typing
from typing import Any, TypeVar

import numpy as np

from glimpse.errors import ConfigError

T = TypeVar("T")

# A dataclass's field types; resolving them (the annotations are strings) costs ~150 us.
_type_hints = functools.cache(typing.get_type_hints)


def option(default: Any, help: str, choices: tuple[Any, ...] | None = None) -> Any:
    """A dataclass field with the help text (and allowed values) its command-line option shows."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


def check_fields(config: Any) -> None:
    """Raises :class:`ConfigError` for a field of ``config`` of the wrong type or outside its
    :func:`option` choices.

    The command line converts and checks each option itself; this catches the same mistakes in
    a config file (``"glimpses": "six"``) or a call from Python, before any other check of the
    values compares them. Call it first in the dataclass's ``__post_init__``.
    """
    hints = _type_hints(type(config))
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        expected = _scalar_type(hints[field.name])
        optional = expected is not hints[field.name]
        if not (value is None and optional) and not _is_instance(value, expected):
            kind = _KINDS.get(expected, expected.__name__) + (" or None" if optional else "")
            raise ConfigError(
                f"{field.name}={value!r} is {_KINDS.get(type(value), type(value).__name__)}, "
                f"not {kind}: fix the value in the config file or the call (the default is "
                f"{field.default!r})."
            )
        choices = field.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(
                f"{field.name}={value!r}; choose one of {', '.join(map(str, choices))}."
            )


def check_at_least(config: Any, minimum: int, *names: str) -> None:
    """Raises :class:`ConfigError` for a field among ``names`` below ``minimum`` (None passes).

    Call it after :func:`check_fields`, which makes the comparison safe."""
    for name in names:
        value = getattr(config, name)
        if value is not None and not value >= minimum:  # NaN too
            raise ConfigError(f"{name}={value} must be at least {minimum}.")


def check_positive(config: Any, *names: str) -> None:
    """Raises :class:`ConfigError` for a field among ``names`` that is not above 0 (None
    passes)."""
    for name in names:
        value = getattr(config, name)
        if value is not None and not value > 0:
            raise ConfigError(f"{name}={value} must be positive.")


_KINDS = {bool: "a boolean (true or false)", int: "an integer", float: "a number", str: "a string"}


def _is_instance(value: Any, expected: type) -> bool:
    """``isinstance`` as a config file means it: an int is a float, a bool is not an int, and
    a path is a str."""
    if expected is bool:
        return isinstance(value, (bool, np.bool_))
    if expected is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if expected is float:
        return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if expected is str:
        return isinstance(value, (str, os.PathLike))
    return isinstance(value, expected)


def _scalar_type(annotation: Any) -> type:
    """``int`` for ``int`` or ``int | None``; the type argparse converts the option's text with."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0]
        raise TypeError(f"unsupported option type {annotation}")
    return annotation


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def add_options(
    parser: argparse.ArgumentParser,
    cls: type,
    section: str = "",
    only_given: bool = False,
    names: tuple[str, ...] | None = None,
    title: str | None = None,
) -> None:
    """One ``--option`` per field of the dataclass ``cls`` (or of those in ``names``), with its
    help, default and choices; its value lands in ``section.field`` (``field`` without one).

    With ``only_given``, an option the user does not type is left out of the parsed namespace
    (so it cannot override settings from elsewhere); its help still shows the default.
    """
    hints = _type_hints(cls)
    group = parser.add_argument_group(title or f"{cls.__name__} options")
    for field in dataclasses.fields(cls):
        if names is not None and field.name not in names:
            continue
        kind = _scalar_type(hints[field.name])
        metadata = field.metadata
        help_text = metadata.get("help", "")
        if only_given:
            help_text = f"{help_text} (default: {field.default})"
        default = argparse.SUPPRESS if only_given else field.default
        dest = f"{section}.{field.name}" if section else field.name
        common = {"dest": dest, "default": default, "help": help_text}
        if kind is bool:
            group.add_argument(
                flag_name(field.name), action=argparse.BooleanOptionalAction, **common
            )
            continue
        group.add_argument(
            flag_name(field.name),
            type=kind,
            choices=metadata.get("choices"),
            metavar=kind.__name__.upper() if metadata.get("choices") is None else None,
            **common,
        )


def given_options(cls: type, namespace: argparse.Namespace, section: str = "") -> dict[str, Any]:
    """The fields of ``cls`` the user typed (see ``only_given`` in :func:`add_options`)."""
    values = vars(namespace)
    prefix = f"{section}." if section else ""
    return {
        f.name: values[prefix + f.name]
        for f in dataclasses.fields(cls)
        if prefix + f.name in values
    }


def from_options(cls: type[T], namespace: argparse.Namespace, section: str = "") -> T:
    """The dataclass ``cls`` built from the options :func:`add_options` added."""
    return cls(**given_options(cls, namespace, section))
