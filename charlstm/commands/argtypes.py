"""argparse `type=` checkers: a bad value is a usage error (exit 2) naming the flag."""

from __future__ import annotations

import argparse
import math

from ..guidance import More


def _parse(text: str, convert, what: str):
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def integer(low: int):
    """An int >= low."""
    def parse(text: str) -> int:
        value = _parse(text, int, "an integer")
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    return parse


def number(low: float, high: float = math.inf, low_open: bool = False,
           high_open: bool = False):
    """A finite float in the interval from low to high; *_open excludes that end."""
    def parse(text: str) -> float:
        value = _parse(text, float, "a number")
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (above and below):
            interval = (f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
                        if high < math.inf else f"{'>' if low_open else '>='} {low:g}")
            raise argparse.ArgumentTypeError(f"must be {'in ' if high < math.inf else ''}"
                                             f"{interval}, got {text}")
        return value
    return parse


def unchecked(kind):
    """An int or float (kind) with no range check: for settings a config dataclass
    validates, so flags and --config files get the same message naming the setting."""
    def parse(text: str):
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def relative(kind):
    """unchecked(kind), or "+N" (N > 0): N more than where a resumed run is (More)."""
    absolute = unchecked(kind)

    def parse(text: str):
        if not text.startswith("+"):
            return absolute(text)
        amount = absolute(text[1:])
        if not (math.isfinite(amount) and amount > 0):
            raise argparse.ArgumentTypeError(f"expected a positive number after +, got {text!r}")
        return More(amount)
    parse.__name__ = kind.__name__
    return parse
