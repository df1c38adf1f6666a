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
