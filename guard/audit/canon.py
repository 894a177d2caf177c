"""The one canonical byte encoding of audit lines, and the UTC timestamps they carry.

A record's hash is taken over its exact bytes, so the encoding must never drift: JSON with keys sorted,
no insignificant whitespace, UTF-8, non-ASCII left unescaped (orjson's only mode). orjson was measured
against the standard library for this exact job (see docs/audit-format.md): it is several times faster,
which matters because the writer encodes every record on the daemon's hot path.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from typing import Any

import orjson

from guard.errors import AuditError

_OPTS = orjson.OPT_SORT_KEYS


def encode(obj: Mapping[str, Any]) -> bytes:
    """Canonical bytes of one audit line (without the trailing newline)."""
    try:
        return orjson.dumps(obj, option=_OPTS)
    except TypeError as exc:  # orjson.JSONEncodeError subclasses TypeError
        raise AuditError(
            f"event cannot be encoded as audit JSON: {exc}",
            hint="record only strings, numbers, booleans, null, lists and string-keyed maps",
        ) from None


def decode(data: bytes) -> Any:
    """Parse one line; raises orjson.JSONDecodeError (a ValueError) on bad JSON."""
    return orjson.loads(data)


def is_canonical(obj: Any, data: bytes) -> bool:
    return orjson.dumps(obj, option=_OPTS) == data


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    """Strict standard base64 (with padding); raises ValueError otherwise."""
    return base64.b64decode(text.encode("ascii"), validate=True)


class TimeFormatter:
    """RFC 3339 UTC timestamps with microseconds, caching the per-second prefix (the writer's hot path)."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, t: float) -> str:
        micros = int(t * 1_000_000)
        second, frac = divmod(micros, 1_000_000)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{frac:06d}Z"


def format_ts(t: float) -> str:
    return TimeFormatter()(t)


def parse_ts(text: str) -> float:
    """Inverse of format_ts for the exact shape guard writes; raises ValueError otherwise."""
    import calendar

    if len(text) != 27 or text[-1] != "Z" or text[19] != ".":
        raise ValueError(f"not a guard timestamp: {text!r}")
    base = time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")
    return calendar.timegm(base) + int(text[20:26]) / 1_000_000
