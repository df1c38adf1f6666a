"""Human durations (`90s`, `15m`, `2h`, `7d`, `1h30m`) to seconds and back."""
from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+)([smhdw])")


def parse_duration(text: str | int | float) -> int:
    """Seconds in `text`; raises ValueError naming the accepted form."""
    if isinstance(text, bool):
        raise ValueError("expected a duration like 90s, 15m, 2h or 7d")
    if isinstance(text, (int, float)):
        if text <= 0:
            raise ValueError("a duration must be positive")
        return int(text)
    compact = text.strip().replace(" ", "")
    if not compact or _PART.sub("", compact):
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 2h or 7d")
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(compact))
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


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
