"""guard.text: the recorded form of byte strings is lossless, and what a person reads is escaped."""

from __future__ import annotations

import base64
import os
import unicodedata

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from guard.text import (
    as_bytes,
    from_record,
    is_record_text,
    json_for_terminal,
    record_json,
    record_key,
    shown,
    shown_text,
    to_record,
    to_record_deep,
    utf8_text,
)

# Never shown raw: anything that moves the cursor, erases, recolours, reorders or hides text.
HIDDEN = {"Cc", "Cf", "Zl", "Zp", "Cs", "Cn"}


def fs(raw: bytes) -> str:
    return os.fsdecode(raw)


@given(st.binary(max_size=64))
def test_any_bytes_survive_the_recorded_form_exactly(raw: bytes) -> None:
    rec = to_record(fs(raw))
    line = orjson.dumps({"v": rec})  # always representable in JSON
    back = orjson.loads(line)["v"]
    assert as_bytes(back) == raw
    assert from_record(back) == fs(raw)
    assert is_record_text(back)


@given(st.binary(max_size=64))
def test_the_recorded_form_is_unique_plain_string_exactly_for_utf8(raw: bytes) -> None:
    rec = to_record(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        assert rec == {"b64": base64.b64encode(raw).decode()}
    else:
        assert rec == text
    assert to_record(fs(raw)) == rec  # bytes and their file-system str record the same


def test_a_tag_that_could_be_a_plain_string_or_is_malformed_is_refused() -> None:
    assert is_record_text({"b64": base64.b64encode(b"\xff").decode()})
    for bad in ({"b64": "eA=="},  # "x" is UTF-8: recorded as a plain string, never tagged
                {"b64": "/w"},  # no padding
                {"b64": "/w==", "x": 1},  # extra key
                {"b64": 5}, {}, [], 3, None,
                {"b64": "/x=="}):  # non-canonical trailing bits (decodes to 0xff too)
        assert not is_record_text(bad), bad
        with pytest.raises(ValueError):
            from_record(bad)


def test_keys_that_are_not_utf8_get_a_documented_string_form() -> None:
    assert record_key("name") == "name"
    assert record_key(fs(b"k\xff")) == "b64:" + base64.b64encode(b"k\xff").decode()


@pytest.mark.parametrize(("value", "expected"), [
    ("git push\x1b[2K\rwrite x", "git push\\x1b[2K\\rwrite x"),  # erase line + carriage return
    ("a\nb\tc", "a\\nb\\tc"),
    ("del\x7f", "del\\x7f"),
    ("csi\x9b31m", "csi\\u009b31m"),  # the one-character C1 CSI
    ("\u202egnp.exe", "\\u202egnp.exe"),  # right-to-left override
    ("a\u2066b\u2069", "a\\u2066b\\u2069"),  # isolates
    ("zero\u200bwidth\ufeff", "zero\\u200bwidth\\ufeff"),
    ("line\u2028sep", "line\\u2028sep"),
    (b"x\xff\x1b", "x\\xff\\x1b"),  # raw bytes: undecodable as \xNN
    (fs(b"x\xff"), "x\\xff"),  # the same in file-system form
    (fs(b"\x9b"), "\\x9b"),  # a raw C1 byte that is not UTF-8
    ({"b64": base64.b64encode(b"/w/\xfe").decode()}, "/w/\\xfe"),  # a recorded value
    ("héllo wörld 😀 日本", "héllo wörld 😀 日本"),  # printable text is left alone
    (None, ""),
])
def test_shown_escapes_what_a_terminal_would_act_on(value: object, expected: str) -> None:
    assert shown(value) == expected  # type: ignore[arg-type]


@given(st.one_of(st.text(max_size=40), st.binary(max_size=40).map(fs), st.binary(max_size=40)))
def test_shown_never_lets_a_control_or_invisible_character_through(value: str | bytes) -> None:
    out = shown(value)
    out.encode("utf-8")  # printable as UTF-8
    assert not any(unicodedata.category(ch) in HIDDEN for ch in out), ascii(out)
    assert "\n" not in out and "\r" not in out and "\x1b" not in out


def test_shown_text_keeps_newlines_and_escapes_the_rest() -> None:
    assert shown_text("guard: refused\n  hint: \x1b[31mrm\u202e") == "guard: refused\n  hint: \\x1b[31mrm\\u202e"


def test_utf8_text_is_valid_utf8_for_any_recorded_value() -> None:
    assert utf8_text({"b64": base64.b64encode(b"a\xffb").decode()}) == "a\\xffb"
    assert utf8_text(fs(b"a\xffb")) == "a\\xffb"
    assert utf8_text("plain\n") == "plain\n"
    assert utf8_text(7) == "7"


@given(st.recursive(st.none() | st.text(max_size=12) | st.integers(-(2**53), 2**53),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                               max_size=3), max_leaves=8))
def test_json_for_terminal_keeps_the_value_and_drops_every_hidden_character(value: object) -> None:
    line = orjson.dumps(value).decode()
    safe = json_for_terminal(line)
    assert orjson.loads(safe) == value
    assert not any(unicodedata.category(ch) in HIDDEN for ch in safe) and "\x1b" not in safe


# Records as guard builds them: str in file-system form (any bytes, so lone surrogates), bytes, numbers,
# None, booleans, tuples and lists, nested maps with str, bytes or (unrecordable) int keys.
_leaf = st.one_of(st.binary(max_size=12).map(os.fsdecode), st.text(max_size=8), st.binary(max_size=6),
                  st.integers(-(2 ** 70), 2 ** 70), st.floats(allow_nan=False), st.none(), st.booleans())
_key = st.one_of(st.binary(max_size=8).map(os.fsdecode), st.text(max_size=6), st.binary(max_size=4),
                 st.integers(0, 3))
_record = st.recursive(_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.lists(inner, max_size=4).map(tuple),
                                                      st.dictionaries(_key, inner, max_size=4)), max_leaves=20)


@settings(max_examples=400)
@given(st.dictionaries(st.text(max_size=6), _record, max_size=5))
@example({"a": {1: "x"}})
@example({"a": (1, [2.5, None, True])})
@example({"big": 2 ** 64})
def test_record_json_is_the_walk_encoded_byte_for_byte(record: dict[str, object]) -> None:
    """orjson's own encoding is taken only where it equals encoding `to_record_deep`'s result; what the
    walk cannot record either (an int key, an int past 64 bits) fails both ways."""
    try:
        walked = orjson.dumps(to_record_deep(record))
    except TypeError:
        with pytest.raises(TypeError):
            record_json(record)
        return
    assert record_json(record) == walked


def test_record_json_tags_what_is_not_utf8_as_the_walk_does() -> None:
    record = {"action": {"target": os.fsdecode(b"/w/caf\xe9"), "argv": ("rm", os.fsdecode(b"\xff"))},
              os.fsdecode(b"k\xfe"): b"\x80", "n": 3}
    assert orjson.loads(record_json(record)) == {
        "action": {"target": {"b64": base64.b64encode(b"/w/caf\xe9").decode()},
                   "argv": ["rm", {"b64": base64.b64encode(b"\xff").decode()}]},
        "b64:" + base64.b64encode(b"k\xfe").decode(): {"b64": base64.b64encode(b"\x80").decode()}, "n": 3}
