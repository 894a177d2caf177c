"""The wire carries non-UTF-8 strings in the trail's tagged form, and refuses what the trail cannot hold."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guard.daemon import protocol as p
from guard.model import Action, Op

fs = os.fsdecode


@given(st.lists(st.binary(min_size=1, max_size=12), min_size=1, max_size=4), st.binary(max_size=12))
def test_session_open_round_trips_any_bytes_in_argv_cwd_workspace_and_env(argv: list[bytes], raw: bytes) -> None:
    path = fs(b"/w/" + raw.replace(b"\x00", b"_"))
    line = p.request_line(1, "session.open", {"policy": "coding-agent", "workspace": path, "cwd": path,
                                              "argv": [fs(a) for a in argv], "env": {"HOME": path}})
    request = p.parse_request(line.rstrip(b"\n"))
    assert request.args["argv"] == tuple(fs(a) for a in argv)
    assert request.args["workspace"] == path and request.args["cwd"] == path
    assert request.args["env"] == {"HOME": path}


def test_an_action_with_a_non_utf8_target_round_trips() -> None:
    action = Action(Op.WRITE, fs(b"/w/x\xff"), argv=("touch", fs(b"x\xff")), cwd=fs(b"/w\xfe"))
    line = p.request_line(2, "decide", {"session": "s", "action": action.to_dict()})
    assert b'"b64"' in line
    assert p.parse_request(line.rstrip(b"\n")).args["action"] == action


@pytest.mark.parametrize(("summary", "field"), [
    ({"allowed": 1.5}, "summary.allowed"),
    ({"Allowed": 1}, "summary.Allowed"),
    ({"x": {"nested": 1}}, "summary.x"),
    ({"big": 2**60}, "summary.big"),
])
def test_a_summary_the_trail_cannot_hold_is_refused_naming_the_field(summary: dict[str, object],
                                                                      field: str) -> None:
    line = p.request_line(3, "session.close", {"session": "s", "summary": summary})
    with pytest.raises(p.RequestError, match=field):
        p.parse_request(line.rstrip(b"\n"))


def test_a_malformed_tag_is_refused_naming_the_field() -> None:
    line = p.request_line(4, "session.open", {"policy": "x", "workspace": "/w", "argv": [{"b64": "eA=="}]})
    with pytest.raises(p.RequestError, match=r"argv\[0\]"):
        p.parse_request(line.rstrip(b"\n"))


@pytest.mark.parametrize(("op", "fields", "field"), [
    ("session.close", {"session": "s", "exit_status": 2**60}, "exit_status"),
    ("decide", {"session": "s", "action": {"op": "read", "target": "/x", "pid": 2**60}}, "action.pid"),
])
def test_integers_beyond_what_the_trail_holds_are_refused(op: str, fields: dict[str, object], field: str) -> None:
    with pytest.raises(p.RequestError, match=field):
        p.parse_request(p.request_line(5, op, fields).rstrip(b"\n"))


def test_a_connection_record_with_a_huge_count_is_refused() -> None:
    with pytest.raises(p.RequestError, match=r"event\.bytes_up"):
        p.parse_record_event({"type": "connection", "protocol": "http", "verdict": "allow", "bytes_up": 2**60})
