"""Parsing of daemon requests: every malformed field is refused with a code and the field's name."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guard.daemon import protocol as p
from guard.model import Action, Op, Verdict


def line(**fields: object) -> bytes:
    return json.dumps({"v": p.VERSION, "id": 7, **fields}).encode()


def refused(raw: bytes) -> p.RequestError:
    with pytest.raises(p.RequestError) as info:
        p.parse_request(raw)
    return info.value


def test_hello_parses_with_no_args() -> None:
    request = p.parse_request(line(op="hello"))
    assert (request.id, request.op, dict(request.args)) == (7, "hello", {"client": None, "v": p.VERSION})


def test_hello_is_answered_in_any_protocol_version() -> None:
    """The handshake: a client of another guard version learns which daemon it reached."""
    for version in (1, p.VERSION, p.VERSION + 1):
        request = p.parse_request(orjson.dumps({"v": version, "id": 1, "op": "hello",
                                                "client": {"version": "9.9", "protocol": version}}))
        assert request.op == "hello" and request.args["v"] == version
        assert request.args["client"] == {"version": "9.9", "protocol": version}
    with pytest.raises(p.RequestError) as exc:
        p.parse_request(orjson.dumps({"v": p.VERSION + 1, "id": 1, "op": "status"}))
    assert exc.value.code == p.BAD_VERSION and "different guard versions" in exc.value.message


def test_decide_converts_the_action() -> None:
    request = p.parse_request(line(op="decide", session="abc", action={"op": "write", "target": "/w/x"}))
    assert request.args["action"] == Action(Op.WRITE, "/w/x")


def test_session_open_defaults_optional_fields() -> None:
    request = p.parse_request(line(op="session.open", policy="coding-agent", workspace="/w"))
    assert request.args == {"policy": "coding-agent", "workspace": "/w", "argv": (), "cwd": None, "pid": None,
                            "env": None, "resume": None}


@pytest.mark.parametrize(("raw", "code", "needle"), [
    (b"{not json", p.BAD_JSON, "not valid JSON"),
    (b"\xff\xfe", p.BAD_JSON, "not valid JSON"),
    (b"[1, 2]", p.BAD_REQUEST, "JSON object"),
    (b'"hello"', p.BAD_REQUEST, "JSON object"),
    (orjson.dumps({"v": 1, "op": "hello"}), p.BAD_REQUEST, "'id'"),
    (orjson.dumps({"v": 1, "id": True, "op": "hello"}), p.BAD_REQUEST, "'id'"),
    (orjson.dumps({"v": 1, "id": 1.5, "op": "hello"}), p.BAD_REQUEST, "'id'"),
    (orjson.dumps({"v": 1, "id": "x" * 200, "op": "hello"}), p.BAD_REQUEST, "'id'"),
    (orjson.dumps({"v": 1, "id": 1, "op": "status"}), p.BAD_VERSION, "'v'"),
    (orjson.dumps({"v": True, "id": 1, "op": "hello"}), p.BAD_VERSION, "'v'"),
    (orjson.dumps({"id": 1, "op": "hello"}), p.BAD_VERSION, "'v'"),
    (line(op=3), p.BAD_REQUEST, "'op'"),
    (line(op="rm -rf"), p.UNKNOWN_OP, "unknown operation"),
    (line(op="status", extra=1), p.BAD_REQUEST, "'extra'"),
    (line(op="decide", action={"op": "read", "target": "/x"}), p.BAD_REQUEST, "'session'"),
    (line(op="decide", session="", action={"op": "read", "target": "/x"}), p.BAD_REQUEST, "'session'"),
    (line(op="decide", session="s", action=[]), p.BAD_REQUEST, "'action'"),
    (line(op="decide", session="s", action={"op": "fly", "target": "/x"}), p.BAD_REQUEST, "action.op"),
    (line(op="decide", session="s", action={"op": "read", "target": 3}), p.BAD_REQUEST, "action.target"),
    (line(op="decide", session="s", action={"op": "run", "target": "ls", "argv": [1]}), p.BAD_REQUEST,
     "action.argv"),
    (line(op="session.open", policy="p", workspace="relative"), p.BAD_REQUEST, "'workspace'"),
    (line(op="session.open", policy="p", workspace="/w\x00x"), p.BAD_REQUEST, "'workspace'"),
    (line(op="session.open", policy="p", workspace="/w", argv=["a", 2]), p.BAD_REQUEST, "'argv[1]'"),
    (line(op="session.open", policy="p", workspace="/w", pid="12"), p.BAD_REQUEST, "'pid'"),
    (line(op="session.open", policy="p", workspace="/w", pid=False), p.BAD_REQUEST, "'pid'"),
    (line(op="session.close", session="s", summary=[]), p.BAD_REQUEST, "'summary'"),
    (line(op="approvals.decide", approval="a1", verdict="ask"), p.BAD_REQUEST, "'verdict'"),
    (line(op="approvals.decide", approval="a1", verdict="allow", by=5), p.BAD_REQUEST, "'by'"),
    (line(op="record", session="s", event="x"), p.BAD_REQUEST, "'event'"),
])
def test_bad_requests_name_the_problem(raw: bytes, code: str, needle: str) -> None:
    error = refused(raw)
    assert error.code == code
    assert needle in error.message


def test_the_request_id_survives_into_the_error() -> None:
    assert refused(orjson.dumps({"v": 9, "id": "abc", "op": "status"})).request_id == "abc"
    assert refused(b"nope").request_id is None


def test_oversized_line_is_refused_before_parsing() -> None:
    error = refused(b" " * (p.MAX_LINE + 1))
    assert error.code == p.TOO_LARGE


def test_approvals_decide_takes_only_allow_or_deny() -> None:
    request = p.parse_request(line(op="approvals.decide", approval="a1", verdict="deny"))
    assert request.args == {"approval": "a1", "verdict": Verdict.DENY, "by": ""}


def test_replies_round_trip() -> None:
    ok = p.parse_reply(p.ok_reply(3, {"x": 1}).rstrip(b"\n"))
    assert ok == {"v": p.VERSION, "id": 3, "ok": True, "result": {"x": 1}}
    err = p.parse_reply(p.error_reply(None, p.FORBIDDEN, "no").rstrip(b"\n"))
    assert err["error"] == {"code": "forbidden", "message": "no"}


@pytest.mark.parametrize("raw", [b"[]", b"{\"v\": 1, \"ok\": true}", b"{\"v\": 3, \"ok\": true}", b"{\"v\": 1}", b"garbage"])
def test_client_side_refuses_malformed_replies(raw: bytes) -> None:
    with pytest.raises(p.ProtocolError):
        p.parse_reply(raw)


def test_request_line_is_parse_request_inverse() -> None:
    raw = p.request_line(5, "decide", {"session": "s1", "action": Action(Op.RUN, "git push").to_dict()})
    assert raw.endswith(b"\n")
    request = p.parse_request(raw[:-1])
    assert request.args["action"] == Action(Op.RUN, "git push")


class TestRecordEvents:
    def test_connection_event_keeps_validated_fields(self) -> None:
        kind, fields = p.parse_record_event({"type": "connection", "protocol": "connect", "client": "127.0.0.1:5",
                                             "host": "example.com", "port": 443, "bytes_up": 10,
                                             "bytes_down": 0, "verdict": "allow", "address": None,
                                             "addresses": ["93.184.216.34"], "duration_ms": 1, "rule_id": None,
                                             "reason": "allowed", "audit_only": False, "error": None})
        assert kind == "connection"
        assert fields["addresses"] == ["93.184.216.34"] and fields["duration_ms"] == 1
        assert fields["port"] == 443 and fields["address"] is None

    def test_the_net_layers_record_is_accepted_as_it_is(self) -> None:
        from guard.net.records import ConnectionRecord

        record = ConnectionRecord(protocol="socks5", client="127.0.0.1:1", verdict="deny", rule_id="guard:x",
                                  reason="no", host="h", port=1, error="refused", audit_only=True)
        kind, fields = p.parse_record_event(record.to_dict())
        assert kind == "connection" and fields["error"] == "refused" and fields["audit_only"] is True

    def test_decision_event_is_parsed_into_model_types(self) -> None:
        kind, fields = p.parse_record_event({"type": "decision", "action": {"op": "read", "target": "/x"},
                                             "decision": {"verdict": "deny", "rule_id": "r1", "reason": "no"}})
        assert kind == "decision"
        assert fields["action"] == Action(Op.READ, "/x")
        assert fields["decision"].verdict is Verdict.DENY

    @pytest.mark.parametrize(("event", "needle"), [
        ({"type": "session", "event": "end"}, "event.type"),
        ({"type": "approval"}, "event.type"),
        ({}, "event.type"),
        ({"type": "connection"}, "event.protocol"),
        ({"type": "connection", "protocol": "http"}, "event.verdict"),
        ({"type": "connection", "protocol": "http", "verdict": "allow", "bytes_up": -1}, "event.bytes_up"),
        ({"type": "connection", "protocol": "http", "verdict": "allow", "bytes_up": True}, "event.bytes_up"),
        ({"type": "connection", "protocol": "http", "verdict": "allow", "duration_ms": float("nan")},
         "event.duration_ms"),
        ({"type": "connection", "protocol": "http", "verdict": "allow", "duration_ms": 0.5},
         "event.duration_ms"),
        ({"type": "connection", "protocol": "http", "verdict": "allow", "duration_s": 1}, "event.duration_s"),
        ({"type": "connection", "protocol": "http", "verdict": "maybe"}, "event.verdict"),
        ({"type": "connection", "protocol": "http", "verdict": "allow", "port": 70000}, "event.port"),
        ({"type": "connection", "protocol": "http", "verdict": "allow", "audit_only": 1}, "event.audit_only"),
        ({"type": "connection", "protocol": "http", "verdict": "allow", "seq": 5}, "event.seq"),
        ({"type": "decision", "action": {"op": "read", "target": "/x"}}, "event.decision"),
        ({"type": "decision", "action": {"op": "read", "target": "/x"}, "decision": {"verdict": "x"}},
         "decision.verdict"),
        ({"type": "decision", "action": {"op": "read", "target": "/x"}, "decision": {"verdict": "allow"},
          "session": "other"}, "event.session"),
    ])
    def test_bad_record_events_name_the_field(self, event: dict[str, object], needle: str) -> None:
        with pytest.raises(p.RequestError) as info:
            p.parse_record_event(event)
        assert needle in info.value.message


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_never_escape_as_other_exceptions(raw: bytes) -> None:
    try:
        p.parse_request(raw)
    except p.RequestError as exc:
        assert exc.code in {p.BAD_JSON, p.BAD_REQUEST, p.BAD_VERSION, p.UNKNOWN_OP}


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
                     lambda children: st.lists(children, max_size=4)
                     | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(p.OPS)), st.dictionaries(
    st.sampled_from(["session", "action", "policy", "workspace", "argv", "cwd", "pid", "event", "summary",
                     "exit_status", "approval", "verdict", "by"]), _json, max_size=5))
def test_random_fields_for_every_op_are_accepted_or_refused_cleanly(op: str, fields: dict[str, object]) -> None:
    try:
        request = p.parse_request(line(op=op, **fields))
    except p.RequestError as exc:
        assert exc.code == p.BAD_REQUEST and "field" in exc.message
    else:
        assert set(request.args) == set(p.OPS[op]) | ({"v"} if op == "hello" else set())  # hello: any version
