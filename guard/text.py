"""Bytes are bytes: how guard carries, records and shows strings that came from the agent.

On Linux a path, an argv word, an environment value or a host name is a byte string that need not be valid
UTF-8. Inside guard such a value is a `str` in Python's file-system form (`os.fsdecode`: every byte that is
not part of valid UTF-8 becomes a lone surrogate U+DC80..U+DCFF), so the policy engine matches it like any
other name. Two edges need more than that, and both live here so there is exactly one rule for each:

* **Recording** (`to_record` / `from_record`): JSON cannot hold a lone surrogate, so a value whose bytes are
  valid UTF-8 is recorded as a JSON string and any other value as the tagged object `{"b64": "<standard
  base64 of its bytes>"}`. The trail keeps the exact bytes; docs/audit-format.md specifies the form.
* **Showing** (`shown`): whatever a person reads in a terminal goes through `shown`, which escapes every
  character that could move the cursor, erase or recolour text, reorder it (bidi controls) or hide it (zero
  width and other format characters), and shows undecodable bytes as `\\xNN`. An agent-controlled string
  can then never make a row look like something else. It is for reading, not an encoding: backslashes are
  not doubled (commands stay readable), so the exact value is in the JSON output, not the display.

This module is pure (no I/O) so every layer may use it.
"""

from __future__ import annotations

import base64
import binascii
import os
import sys
import unicodedata
from collections.abc import Mapping
from typing import Any

import orjson

# The tag of a non-UTF-8 value in a record: an object with exactly this one key.
BYTES_TAG = "b64"

RecordText = str | dict[str, str]

# Paths and argv reach guard through os.fsdecode; on the usual UTF-8 locale a str's bytes are its UTF-8
# (with surrogateescape), which allows a fast check. Otherwise every str goes through os.fsencode.
_FS_UTF8 = sys.getfilesystemencoding().lower().replace("-", "") == "utf8"


def as_bytes(value: str | bytes | Mapping[str, Any]) -> bytes:
    """The exact bytes of a value: a str in file-system form, bytes, or a recorded (possibly tagged) value."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return _str_bytes(value)
    return _tag_bytes(value)


def as_text(value: str | bytes | Mapping[str, Any]) -> str:
    """The value as guard handles it in memory: a str in file-system form (lossless for any bytes)."""
    if isinstance(value, str):
        return value
    return os.fsdecode(as_bytes(value))


def to_record(value: str | bytes) -> RecordText:
    """The recorded form: the string itself when its bytes are valid UTF-8, else `{"b64": ...}`."""
    if isinstance(value, str) and not _FS_UTF8:  # a str stands for its file-system bytes (os.fsencode)
        value = _str_bytes(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return {BYTES_TAG: base64.b64encode(_str_bytes(value)).decode("ascii")}
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {BYTES_TAG: base64.b64encode(value).decode("ascii")}


def from_record(value: object) -> str:
    """Inverse of `to_record`, back to the in-memory form; raises ValueError naming what is wrong."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return os.fsdecode(_tag_bytes(value))
    raise ValueError(f"expected a string or a {{{BYTES_TAG!r}: ...}} object, got {type(value).__name__}")


def is_record_text(value: object) -> bool:
    """True for a JSON string or a well-formed tagged byte string (what the verifier accepts as text)."""
    if isinstance(value, str):
        return True
    try:
        _tag_bytes(value)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return False
    return True


def to_record_deep(obj: Any) -> Any:
    """`obj` with every str that is not valid UTF-8 replaced by its tagged form (dict keys too), lists and
    tuples as lists; other values unchanged. Used where whole records are built from free-form extras."""
    if isinstance(obj, str):
        return to_record(obj)
    if isinstance(obj, bytes):
        return to_record(obj)
    if isinstance(obj, Mapping):
        out: dict[Any, Any] = {}
        for key, item in obj.items():
            out[record_key(key) if isinstance(key, str | bytes) else key] = to_record_deep(item)
        return out
    if isinstance(obj, list | tuple):
        return [to_record_deep(item) for item in obj]
    return obj


def record_json(obj: Any) -> bytes:
    """`orjson.dumps(to_record_deep(obj))`, by orjson alone when it takes `obj` as it is.

    Why: a record is rendered for every decision the supervisor makes in Python, and walking it in Python
    cost more than encoding it. orjson refuses exactly what `to_record_deep` would change on a UTF-8 file
    system (a str with a lone surrogate, bytes, a key that is not a str), and encodes tuples as lists as
    that does, so its bytes are the same whenever it accepts the object; anything it refuses, or any other
    file-system encoding, takes the walk (tests/unit/test_text.py compares both on generated records).
    Raises TypeError (orjson.JSONEncodeError) for what cannot be recorded."""
    if _FS_UTF8:
        try:
            return orjson.dumps(obj)
        except orjson.JSONEncodeError:
            pass
    return orjson.dumps(to_record_deep(obj))


def shown(value: str | bytes | Mapping[str, Any] | None) -> str:
    """A single display line for an agent-controlled value: safe to print to any terminal.

    Escaped: C0 controls and DEL (`\\n`, `\\r`, `\\t`, else `\\xNN`: ESC is `\\x1b`), C1 controls, line and
    paragraph separators, bidi and other invisible format characters (`\\uNNNN`), and bytes that are not
    UTF-8 (`\\xNN`). Accepts a str in file-system form, raw bytes, or a recorded value (tagged or not);
    None shows as the empty string. A malformed tagged value shows as its JSON-ish repr, escaped.
    """
    if value is None:
        return ""
    if isinstance(value, bytes):
        text = os.fsdecode(value)
    elif isinstance(value, str):
        text = value
    else:
        try:
            text = from_record(value)
        except ValueError:
            text = repr(value)
    if text.isprintable() and text.isascii():
        return text  # the common case, cheaply
    return "".join(_shown_char(ch) for ch in text)


def shown_text(text: str) -> str:
    """A multi-line message guard composed (which may quote agent-controlled values): like `shown`, but
    newlines stay newlines. Used at the CLI's output edge, so no control sequence reaches a terminal even
    through a message that forgot to escape a field; fields in tables and rows use `shown`."""
    if text.isprintable() and text.isascii():
        return text
    return "\n".join(shown(line) for line in text.split("\n"))


def json_for_terminal(line: str) -> str:
    """A JSON text safe to print to a terminal and equal in value: every character `shown` would escape that
    JSON leaves raw (C1 controls, bidi and other format characters, separators) becomes a `\\uXXXX` escape.
    Outside strings JSON text is ASCII, so this never changes what the line parses to."""
    if line.isascii() and "\x7f" not in line:
        return line  # JSON already escapes C0 controls
    out = []
    for ch in line:
        if (ch.isascii() and ch != "\x7f") or unicodedata.category(ch) not in _HIDDEN:
            out.append(ch)
        else:
            out.extend(f"\\u{unit:04x}" for unit in _utf16_units(ch))
    return "".join(out)


def _utf16_units(ch: str) -> tuple[int, ...]:
    data = ch.encode("utf-16-be", "surrogatepass")
    return tuple(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))


def utf8_text(value: object) -> str:
    """A recorded value as a valid UTF-8 string for systems that need one (an OCSF field): a plain string
    as is, a tagged byte string with its undecodable bytes as `\\xNN`, anything else as `str()`. Lossy for
    bytes (the exact bytes stay in the trail); not escaped for terminals (use `shown`)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return _escape_surrogates(value)
        return value
    if isinstance(value, Mapping | bytes):
        try:
            return _escape_surrogates(as_text(value))
        except ValueError:
            pass
    return str(value)


def _escape_surrogates(text: str) -> str:
    return "".join(f"\\x{ord(ch) - 0xDC00:02x}" if 0xDC80 <= ord(ch) <= 0xDCFF
                   else ch if not 0xD800 <= ord(ch) <= 0xDFFF else f"\\u{ord(ch):04x}" for ch in text)


_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Categories that are never shown raw: controls, format characters (bidi, zero width, BOM), separators
# that break lines, surrogates (undecodable bytes, or a stray surrogate from elsewhere), unassigned.
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Cn"})


def _shown_char(ch: str) -> str:
    code = ord(ch)
    if ch in _SHORT:
        return _SHORT[ch]
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte in file-system form
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x7F:
        return ch
    if unicodedata.category(ch) in _HIDDEN:
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    return ch


def _str_bytes(value: str) -> bytes:
    """os.fsencode, but total: a character the file-system encoding cannot hold (a surrogate outside
    U+DC80..U+DCFF, never made by fsdecode but possible in a str) is kept as its UTF-8-style bytes."""
    try:
        return os.fsencode(value)
    except UnicodeEncodeError:
        return b"".join(_char_bytes(ch) for ch in value)


def _char_bytes(ch: str) -> bytes:
    try:
        return os.fsencode(ch)
    except UnicodeEncodeError:
        return ch.encode("utf-8", "surrogatepass")


def _tag_bytes(value: Mapping[str, Any]) -> bytes:
    if not isinstance(value, Mapping) or set(value) != {BYTES_TAG} or not isinstance(value[BYTES_TAG], str):
        raise ValueError(f"expected a {{{BYTES_TAG!r}: <base64>}} object")
    text = value[BYTES_TAG]
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError(f"{BYTES_TAG}: not standard base64 with padding") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise ValueError(f"{BYTES_TAG}: not the canonical base64 of its bytes")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw
    raise ValueError(f"{BYTES_TAG}: holds valid UTF-8, which is recorded as a plain string")


def record_key(key: str | bytes) -> str:
    """A map key as recorded. A key cannot be an object, so a non-UTF-8 key is written `b64:<base64>`
    (guard's own records use fixed ASCII names; this only keeps a stray key from losing a record)."""
    rec = to_record(key)
    return rec if isinstance(rec, str) else f"{BYTES_TAG}:{rec[BYTES_TAG]}"
