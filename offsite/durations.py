"""Human durations (`90s`, `15m`, `2h`, `7d`, `1h30m`) to seconds and back."""
from __future__ import annotations

import math
import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_WHOLE = re.compile(r"\s*(?:[0-9]{1,18}\s*[smhdw]\s*)+", re.ASCII)
_PART = re.compile(r"([0-9]{1,18})\s*([smhdw])", re.ASCII)
_FORM = "a duration like 90s, 15m, 2h, 7d or 1h30m (or a whole number of seconds)"

MAX_DURATION_S = 3650 * 86400
"""Ten years: anything longer is a typo, and would overflow the timers it is used in."""


def parse_duration(text: object) -> int:
    """Whole seconds in `text`, between 1 s and MAX_DURATION_S; raises ValueError naming the
    accepted form for anything else (fractions, negatives, lists, booleans, '1.5h')."""
    if isinstance(text, bool) or not isinstance(text, (int, float, str)):
        raise ValueError(f"expected {_FORM}, not {_kind(text)}")
    if isinstance(text, float):
        if not math.isfinite(text) or not text.is_integer():
            raise ValueError(f"{text!r} is not a whole number of seconds: write {_FORM}")
        text = int(text)
    if isinstance(text, int):
        seconds = text
    else:
        if len(text) > 64 or not _WHOLE.fullmatch(text):
            raise ValueError(f"{text[:64]!r} is not {_FORM}")
        seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(text))
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{text!r} is longer than the maximum of "
                         f"{format_duration(MAX_DURATION_S)} (10 years)")
    return seconds


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    return {list: "a list", dict: "a mapping", type(None): "an empty value"}.get(
        type(value), type(value).__name__)


def format_duration(seconds: float) -> str:
    remaining = int(round(seconds))
    if remaining < 60:
        return f"{remaining}s"
    parts = []
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if remaining >= size:
            parts.append(f"{remaining // size}{unit}")
            remaining %= size
    return "".join(parts)
