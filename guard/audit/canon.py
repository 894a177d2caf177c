"""The one canonical byte encoding of audit lines, and the UTC timestamps they carry.

A record's hash is taken over its exact bytes, so the encoding must never drift: JSON with keys sorted,
no insignificant whitespace, UTF-8, non-ASCII left unescaped (orjson's only mode). orjson was measured
against the standard library for this exact job (see docs/audit-format.md): it is several times faster,
which matters because the writer encodes every record on the daemon's hot path.

The values a record may hold are restricted so that these bytes are also exactly RFC 8785 (JCS) canonical
JSON, which any language can reproduce: strings, booleans, null, integers within +/-(2**53 - 1), lists, and
objects with string keys. No floats (JCS and orjson print them differently; durations are integer
milliseconds). A string that is not valid UTF-8 (a path or argv word in file-system form) is not an error:
it is recorded as `{"b64": ...}` (guard.text.to_record), so no input can make a record unwritable.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from typing import Any

import orjson

from guard.errors import AuditError
from guard.text import record_key, to_record

# STRICT_INTEGER: beyond 53 bits JCS (IEEE doubles) and orjson disagree. PASSTHROUGH_*: orjson would
# silently turn dataclasses and datetimes into JSON of its own choosing; they must be converted explicitly.
OPTS = (orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER | orjson.OPT_PASSTHROUGH_DATACLASS
         | orjson.OPT_PASSTHROUGH_DATETIME)
MAX_INT = 2**53 - 1
_SCALARS = frozenset({str, int, bool, type(None)})


def encode(obj: Mapping[str, Any]) -> bytes:
    """Canonical bytes of one audit line (without the trailing newline).

    Raises AuditError naming the field for a float, an integer beyond 53 bits, a non-string key or a value
    of another type; strings that are not valid UTF-8 are recorded in their tagged form instead.
    """
    if type(obj) is dict and _plain(obj):
        try:
            return orjson.dumps(obj, option=OPTS)
        except TypeError:  # a str that is not UTF-8, or an int beyond 53 bits: the careful path says which
            pass
    if not isinstance(obj, Mapping):
        raise AuditError(f"record: expected a JSON object, got {type(obj).__name__}")
    return _jcs(_canonical(obj, ""))


def _jcs(obj: Any) -> bytes:
    """RFC 8785 bytes of a value `_canonical` produced. orjson sorts keys by code point, JCS by UTF-16 code
    unit; they differ only for keys mixing U+E000..U+FFFF with characters beyond U+FFFF, which only this
    path sees (`_plain` sends every non-ASCII key here)."""
    if type(obj) is dict:
        items = sorted(obj.items(), key=lambda kv: kv[0].encode("utf-16-be"))
        return b"{" + b",".join(orjson.dumps(k) + b":" + _jcs(v) for k, v in items) + b"}"
    if type(obj) is list:
        return b"[" + b",".join(_jcs(v) for v in obj) + b"]"
    return orjson.dumps(obj, option=OPTS)


def _plain(d: dict[Any, Any]) -> bool:
    """True when every key is an ASCII string and every value a JSON scalar orjson encodes canonically, or a
    dict/list of them (cheap: this runs for every record; anything else takes the careful path)."""
    for k, v in d.items():
        if type(k) is not str or not k.isascii():
            return False
        t = type(v)
        if t in _SCALARS:
            continue
        if t is dict:
            if not _plain(v):
                return False
        elif t is list:
            for x in v:
                tx = type(x)
                if tx in _SCALARS:
                    continue
                if tx is dict:
                    if not _plain(x):
                        return False
                elif tx is list:
                    if not _plain({"": x}):
                        return False
                else:
                    return False
        else:
            return False
    return True


def _canonical(obj: Any, where: str) -> Any:
    """`obj` as the trail records it, or AuditError naming `where` (a dotted field path)."""
    if isinstance(obj, bool) or obj is None:
        return obj
    if isinstance(obj, str):
        return to_record(str(obj))
    if isinstance(obj, bytes):
        return to_record(bytes(obj))
    if isinstance(obj, int):
        if not -MAX_INT <= obj <= MAX_INT:
            raise AuditError(f"record field {where or '.'}: integer {obj} is beyond +/-(2**53 - 1)",
                             hint="record large numbers as decimal strings")
        return int(obj)
    if isinstance(obj, float):
        raise AuditError(f"record field {where or '.'}: {obj!r} is a float; records hold no floats",
                         hint="record durations as integer milliseconds (e.g. duration_ms), other "
                              "fractions as strings")
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise AuditError(f"record field {where or '.'}: key {key!r} is not a string")
            name = f"{where}.{key}" if where else key
            out[record_key(str(key))] = _canonical(value, name)
        return out
    if isinstance(obj, list | tuple):
        return [_canonical(item, f"{where}[{i}]") for i, item in enumerate(obj)]
    raise AuditError(f"record field {where or '.'}: a {type(obj).__name__} cannot be recorded",
                     hint="record only strings, integers, booleans, null, lists and string-keyed maps")


def decode(data: bytes) -> Any:
    """Parse one line; raises orjson.JSONDecodeError (a ValueError) on bad JSON."""
    return orjson.loads(data)


def is_canonical(obj: Any, data: bytes) -> bool:
    """True when `data` is the canonical encoding of `obj` (a parsed line); an integer beyond 53 bits is
    not. Floats are accepted here: lines written before durations became milliseconds hold them."""
    try:
        if orjson.dumps(obj, option=OPTS) == data:
            return True
    except TypeError:
        return False
    return type(obj) is dict and not _plain(obj) and _jcs_or_none(obj) == data


def _jcs_or_none(obj: Any) -> bytes | None:
    try:
        return _jcs(obj)
    except TypeError:
        return None


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
