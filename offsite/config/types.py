"""The value types of the config: names, durations, schedules, folders, URLs, each with its
check and, for the custom ones, the JSON Schema `offsite config-schema` prints."""
from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BeforeValidator, PlainValidator, WithJsonSchema

from offsite.config.rules import (check_absolute_path, check_http_url, system_dir_problem)
from offsite.durations import parse_duration
from offsite.schedule.specs import parse_schedule_spec

MAX_SCRIPT_BYTES = 64 * 1024

DURATION_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "integer", "minimum": 1, "maximum": 3650 * 86400},
              {"type": "string", "pattern": r"^\s*([0-9]{1,18}\s*[smhdw]\s*)+$"}],
    "description": "a duration: whole seconds, or 90s, 15m, 2h, 7d, 1w, 1h30m (1 s to 10 years)",
}
SCHEDULE_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "string", "maxLength": 200,
               "description": "a 5-field cron expression (minute hour day month weekday)"},
              {"type": "object", "properties": {"every": DURATION_SCHEMA},
               "required": ["every"], "additionalProperties": False,
               "description": "an interval on the grid of schedule.anchor"}],
}

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def check_name(value: str) -> str:
    if not NAME_PATTERN.match(value):
        raise ValueError(f"{value!r} is not a valid name (letters, digits, '_', '.', '-'; "
                         "starting with a letter or digit; at most 63 characters)")
    return value


def check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (use an IANA name like UTC or "
                         "Europe/London)") from None
    return value


def check_script_code(value: str) -> str:
    if len(value.encode("utf-8", "surrogatepass")) > MAX_SCRIPT_BYTES:
        raise ValueError(f"script code is longer than {MAX_SCRIPT_BYTES // 1024} KiB: put it in "
                         "a file on the host and call that file")
    if not value.strip():
        raise ValueError("script code is empty")
    return value


def check_data_root(value: Path) -> Path:
    path = check_absolute_path(value)
    if (problem := system_dir_problem(path)) is not None:
        raise ValueError(problem)
    return path


def check_region(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9-]{1,40}", value):
        raise ValueError(f"{value[:60]!r} is not a region name like eu-west-1")
    return value


def check_topic_arn(value: str) -> str:
    if not re.fullmatch(r"arn:[a-z-]{1,20}:sns:[a-z0-9-]{0,40}:[0-9]{0,12}:[A-Za-z0-9_.-]{1,256}",
                        value):
        raise ValueError(f"{value[:80]!r} is not an SNS topic ARN "
                         "(arn:aws:sns:REGION:ACCOUNT:NAME)")
    return value


MIN_RATE = 1000                 # 1 KB/s: anything slower is a typo, and never finishes
MAX_RATE = 100 * 1000 ** 3      # 100 GB/s
_RATE = re.compile(r"^\s*([0-9]{1,12}(?:\.[0-9]{1,6})?)\s*([kmg]i?)?b/s\s*$", re.I)
_RATE_UNITS = {"": 1, "k": 1000, "m": 1000 ** 2, "g": 1000 ** 3,
               "ki": 1024, "mi": 1024 ** 2, "gi": 1024 ** 3}
RATE_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "integer", "minimum": MIN_RATE, "maximum": MAX_RATE},
              {"type": "string", "pattern": r"^\s*[0-9.]+\s*([KMGkmg]i?)?[Bb]/s\s*$"}],
    "description": "bytes per second: a whole number, or 500KB/s, 10MB/s, 1GB/s (KiB/s, MiB/s "
                   "in powers of 1024)",
}


def parse_rate(value: Any) -> int:
    """Bytes per second from 10MB/s, 512KiB/s or a whole number; raises ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError("give bytes per second: a whole number or e.g. 10MB/s, 512KiB/s")
    if isinstance(value, int):
        rate = value
    elif (match := _RATE.match(value)) is None:
        raise ValueError(f"{value[:40]!r} is not a rate like 10MB/s, 512KiB/s or 2000000 "
                         "(bytes per second)")
    else:
        rate = int(float(match[1]) * _RATE_UNITS[(match[2] or "").lower()])
    if not MIN_RATE <= rate <= MAX_RATE:
        raise ValueError(f"{value!r} is outside 1KB/s to 100GB/s")
    return rate


Rate = Annotated[int, BeforeValidator(parse_rate), WithJsonSchema(RATE_SCHEMA)]
Duration = Annotated[int, BeforeValidator(parse_duration), WithJsonSchema(DURATION_SCHEMA)]
Name = Annotated[str, AfterValidator(check_name)]
Schedule = Annotated[Any, PlainValidator(parse_schedule_spec), WithJsonSchema(SCHEDULE_SCHEMA)]
DataRoot = Annotated[Path, AfterValidator(check_data_root)]
AbsolutePath = Annotated[Path, AfterValidator(check_absolute_path)]
HttpUrl = Annotated[str, AfterValidator(check_http_url)]
Region = Annotated[str, AfterValidator(check_region)]
ScriptCode = Annotated[str, AfterValidator(check_script_code)]




def check_interpreter(value: Path) -> Path:
    """An absolute path, no '..': whether it exists is checked on the host, at run time."""
    path = check_absolute_path(value)
    if ".." in path.parts:
        raise ValueError(f"{str(path)[:80]!r} must not contain '..'")
    return path


Interpreter = Annotated[Path, AfterValidator(check_interpreter)]
