"""Argument checks and error-message parts shared by the modules, so that every bad option and
every wrapped exception reads the same way."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def check_choice(name: str, value: Any, choices: Iterable[str]) -> None:
    """Raise ``ValueError`` naming ``name``, the bad ``value`` and the accepted ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (at most ``limit`` characters), or its type's
    name when it has none: torch's messages run to many lines, an ``error:`` line needs one."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
