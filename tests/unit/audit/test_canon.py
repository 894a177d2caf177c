"""The trail's canonical bytes are RFC 8785 (JCS) bytes, checked against an independent implementation
(the `rfc8785` package), and nothing an agent controls can make a record unencodable."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard.audit import AuditWriter, Keyring, decision_event, session_event
from guard.audit.canon import encode, is_canonical
from guard.audit.segments import list_segments, verify_log
from guard.errors import AuditError
from guard.model import Action, Decision, Op, Verdict
from guard.net.records import ConnectionRecord
from guard.text import to_record_deep

from .conftest import Clock

rfc8785 = pytest.importorskip("rfc8785", reason="the rfc8785 package is the oracle (pip install -e '.[test]')")

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "audit"
MAX = 2**53 - 1

fs_text = st.binary(max_size=24).map(os.fsdecode)  # any bytes, in guard's in-memory form
any_text = st.one_of(st.text(max_size=24), fs_text)
ints = st.integers(min_value=-MAX, max_value=MAX)
scalars = st.one_of(st.none(), st.booleans(), ints, any_text)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)


def jcs(obj: object) -> bytes:
    return bytes(rfc8785.dumps(obj))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), values, max_size=6))
def test_encode_is_rfc8785_on_arbitrary_records(record: dict[str, object]) -> None:
    data = encode(record)
    assert data == jcs(to_record_deep(record))  # the recorded form, canonicalised by the oracle
    assert data == jcs(orjson.loads(data))  # and any language re-encoding what it parsed gets the same bytes
    assert is_canonical(orjson.loads(data), data)


actions = st.builds(
    Action, op=st.sampled_from(list(Op)), target=fs_text.filter(bool), pid=st.none() | st.integers(1, 2**22),
    exe=st.none() | fs_text, argv=st.none() | st.lists(fs_text, max_size=4).map(tuple), cwd=st.none() | fs_text,
    addresses=st.lists(fs_text, max_size=2).map(tuple))
decisions = st.builds(Decision, verdict=st.sampled_from(list(Verdict)), rule_id=st.none() | st.text(max_size=12),
                      reason=any_text, audit_only=st.booleans())


@settings(max_examples=200, deadline=None)
@given(actions, decisions, fs_text, st.integers(0, 10**9))
def test_records_the_builders_make_are_rfc8785_and_lossless(action: Action, decision: Decision, host: str,
                                                            elapsed: int) -> None:
    rec = decision_event("s1", action, decision)
    data = encode(rec)
    assert data == jcs(orjson.loads(data))
    back = orjson.loads(data)
    assert Action.from_dict(back["action"]) == action  # the exact bytes come back
    assert Decision.from_dict(back["decision"]) == decision
    conn = {**ConnectionRecord(protocol="socks5", client="127.0.0.1:1", verdict="deny", rule_id=None,
                               reason=host, host=host, addresses=(host,), duration_ms=elapsed).to_dict(),
            "session": "s1"}
    data = encode(conn)
    assert data == jcs(orjson.loads(data))
    end = session_event("s1", "end", argv=list(action.argv or ()), cwd=action.cwd, duration_ms=elapsed)
    assert encode(end) == jcs(orjson.loads(encode(end)))


@pytest.mark.parametrize(("record", "field"), [
    ({"duration_s": 0.5}, "duration_s"),
    ({"counts": {"a": 1, "b": 1.0}}, "counts.b"),  # 1.0: orjson writes 1.0, RFC 8785 writes 1
    ({"list": [1, [2, float("nan")]]}, r"list\[1\]\[1\]"),
    ({"big": 2**53}, "big"),
    ({"neg": -(2**60)}, "neg"),
    ({"obj": object()}, "obj"),
    ({"key": {1: "x"}}, "key"),
])
def test_floats_big_integers_and_foreign_types_are_refused_naming_the_field(record: dict[str, object],
                                                                             field: str) -> None:
    with pytest.raises(AuditError, match=f"record field {field}"):
        encode(record)


def test_non_utf8_strings_and_keys_are_recorded_not_refused() -> None:
    odd = os.fsdecode(b"/w/x\xff")
    data = encode({"target": odd, "argv": ["a", odd], odd: 1})
    tag = base64.b64encode(b"/w/x\xff").decode()
    assert orjson.loads(data) == {"target": {"b64": tag}, "argv": ["a", {"b64": tag}], f"b64:{tag}": 1}


def test_keys_are_ordered_by_utf16_code_units_as_rfc8785_requires() -> None:
    record = {"\uffff": 1, "\U00010000": 2, "a": 3}  # code point order and UTF-16 order disagree here
    data = encode(record)
    assert data == jcs(record)
    assert is_canonical(orjson.loads(data), data)  # and the verifier accepts it


def test_every_line_of_the_golden_vectors_is_rfc8785() -> None:
    lines = [line for seg in sorted((VECTORS / "golden" / "log").glob("seg-*.jsonl"))
             for line in seg.read_bytes().split(b"\n")[:-1]]
    assert len(lines) > 40
    assert any(b'{"b64":' in line for line in lines)  # the golden log carries a non-UTF-8 path
    for line in lines:
        assert jcs(orjson.loads(line)) == line, line


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(actions, decisions), min_size=1, max_size=12))
def test_a_written_log_is_rfc8785_line_by_line_and_verifies(tmp_path_factory: pytest.TempPathFactory,
                                                            items: list[tuple[Action, Decision]]) -> None:
    home = tmp_path_factory.mktemp("canon") / "guard"
    clock = Clock()
    root = Keyring(home).init(now=clock())
    with AuditWriter(home, now=clock, checkpoint_every=5) as w:
        w.append(session_event("s", "start", argv=[a.target for a, _d in items]))
        for action, decision in items:
            w.append(decision_event("s", action, decision))
        w.append(session_event("s", "end", duration_ms=12))
    for seg in list_segments(home / "log"):
        for line in seg.path.read_bytes().split(b"\n")[:-1]:
            assert jcs(orjson.loads(line)) == line
    assert verify_log(home / "log", root.public).exit_code == 0
