"""Thin command-line front ends; each calls a library function and maps UserError to exit 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..errors import UserError

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(func: F) -> F:
    """Print a UserError as one paragraph (no traceback) and exit with code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def parse_size(text: str, multiple: int = 16) -> tuple[int, int]:
    """'480x864' → (480, 864); both positive multiples of ``multiple`` (1: any size)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected HEIGHTxWIDTH such as 480x864, got {text!r}") from None
    if h <= 0 or w <= 0 or h % multiple or w % multiple:
        what = "positive" if multiple == 1 else f"positive multiples of {multiple}"
        raise click.BadParameter(f"height and width must be {what}, got {text}")
    return h, w


MAX_QUEUE = 64


def parse_queues(text: str) -> list[int]:
    """'2' → [2], '1-20' → [1..20], '1,2,5' → [1, 2, 5]; each in 1..64."""
    queues: list[int] = []
    try:
        for part in text.split(","):
            lo, dash, hi = part.strip().partition("-")
            first, last = int(lo), int(hi if dash else lo)
            if first > last:
                raise ValueError
            queues += range(first, last + 1)
    except ValueError:
        raise click.BadParameter(f"expected a queue length like 2, 1-20 or 1,2,5, got "
                                 f"{text!r}") from None
    bad = [q for q in queues if not 1 <= q <= MAX_QUEUE]
    if bad:
        raise click.BadParameter(f"queue lengths must be in 1..{MAX_QUEUE}, got {bad[0]}")
    return sorted(set(queues))
