"""Thin command-line front ends; each calls a library function and maps UserError to exit 2."""

from __future__ import annotations

import functools
import math
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..errors import UserError

F = TypeVar("F", bound=Callable[..., Any])


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, CI runners, job schedulers) or SIGHUP (a closed terminal or ssh
    session), raised in the main thread. A KeyboardInterrupt, so every clean-up that Ctrl-C
    runs (staging folders removed, workers stopped, partial files deleted) runs for it too."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(signum)


HANDLED = (signal.SIGTERM, signal.SIGHUP)


def _die_by(signum: int, previous: dict) -> None:
    """End the process by the signal itself, after the clean-up: a shell loop or a job
    runner then sees death by signal (Ctrl-C stops a ``for`` loop), as with no handler."""
    for other, handler in previous.items():
        if handler is not None:
            signal.signal(other, handler)
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    sys.exit(128 + signum)  # not reached where the signal is deliverable


def user_errors(func: F) -> F:
    """Print a UserError as one paragraph (no traceback) and exit with code 2; SIGTERM,
    SIGHUP and Ctrl-C clean up like an error, say so without a traceback, and end the
    process by that signal (a shell reports 143, 129, 130)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        main = threading.current_thread() is threading.main_thread()
        # a signal ignored on purpose stays ignored (nohup mvos-train ... & must survive a
        # closed terminal)
        previous = {s: signal.signal(s, _terminate) for s in HANDLED
                    if signal.getsignal(s) is not signal.SIG_IGN} if main else {}
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt as exc:
            signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
            click.echo(f"stopped by {signal.Signals(signum).name}; unfinished outputs were "
                       "removed", err=True)
            _die_by(signum, previous)
        finally:
            for signum, handler in previous.items():
                if handler is not None:
                    signal.signal(signum, handler)

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


def parse_counts(text: str, what: str, high: int) -> list[int]:
    """'2' → [2], '1-4' → [1..4], '1,2,5' → [1, 2, 5]; each in 1..high, sorted, unique."""
    counts: list[int] = []
    try:
        for part in text.split(","):
            lo, dash, hi = part.strip().partition("-")
            first, last = int(lo), int(hi if dash else lo)
            if first > last:
                raise ValueError
            counts += range(first, last + 1)
    except ValueError:
        raise click.BadParameter(f"expected a {what} like 2, 1-4 or 1,2,5, got "
                                 f"{text!r}") from None
    bad = [q for q in counts if not 1 <= q <= high]
    if bad:
        raise click.BadParameter(f"a {what} must be in 1..{high}, got {bad[0]}")
    return sorted(set(counts))


def parse_queues(text: str) -> list[int]:
    """'2' → [2], '1-20' → [1..20], '1,2,5' → [1, 2, 5]; each in 1..64."""
    return parse_counts(text, "queue length", MAX_QUEUE)


class FiniteFloat(click.ParamType):
    """A float that is finite and within [low, high] (``click.FloatRange`` lets 'nan' in,
    which would turn a loss or a learning rate into NaN later, mid-run)."""

    name = "float"

    def __init__(self, low: float = -math.inf, high: float = math.inf,
                 low_open: bool = False) -> None:
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if number < self.low or (self.low_open and number == self.low) or number > self.high:
            bound = "(" if self.low_open else "["
            self.fail(f"{number:g} is not in {bound}{self.low:g}, {self.high:g}]", param, ctx)
        return number
