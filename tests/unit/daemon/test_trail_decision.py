"""guard.daemon.protocol.trail_decision: the daemon's short way for the decision records guard run spools.

It must give exactly what the general way gives (parse_record_event, then the model's to_dict, then
decision_event) for every record it takes, and take nothing the general way refuses. Records are generated
around the shape guard run writes: every key of the model, unknown keys, wrong types, non-ASCII and tagged
strings, bad enum values, booleans where integers go, pids out of range.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from guard.audit import decision_event
from guard.audit.canon import _plain, encode
from guard.daemon import protocol as p
from guard.model import Op, Verdict

ASCII = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12)
ODD_TEXT = st.one_of(st.text(max_size=8), st.sampled_from(["", "\u00e9t\u00e9", "\udc80x"]),
                     st.fixed_dictionaries({"b64": st.sampled_from(["eA==", "!!", ""])}))
ANY = st.one_of(st.none(), st.booleans(), st.integers(-3, 2**54), ODD_TEXT, st.lists(ODD_TEXT, max_size=3),
                st.floats(allow_nan=False, width=32), st.just({}))


def mostly(valid: st.SearchStrategy[Any], odd: st.SearchStrategy[Any] = ANY) -> st.SearchStrategy[Any]:
    """Valid 19 times in 20: many records must reach the short way for the comparison to mean much."""
    return st.integers(0, 19).flatmap(lambda i: odd if i == 0 else valid)


OPS = mostly(st.sampled_from([o.value for o in Op]), st.one_of(st.sampled_from(["", "WRITE", "delete"]), ANY))
VERDICTS = mostly(st.sampled_from([v.value for v in Verdict]), st.one_of(st.sampled_from(["ALLOW", "yes"]), ANY))
PIDS = mostly(st.one_of(st.integers(0, 2**31), st.just(2**53 - 1), st.none()),
              st.one_of(st.just(2**53), st.just(-1), st.booleans(), ODD_TEXT))
WORDS = mostly(st.lists(mostly(ASCII, ODD_TEXT), max_size=4))


@st.composite
def records(draw: st.DrawFn) -> Any:
    action: dict[str, Any] = {"op": draw(OPS), "target": draw(mostly(ASCII.filter(bool), ODD_TEXT))}
    for key, values in (("kind", mostly(st.sampled_from(["file", "network", "process"]))), ("pid", PIDS),
                        ("exe", mostly(ASCII, ODD_TEXT)), ("cwd", mostly(ASCII, ODD_TEXT)),
                        ("argv", WORDS), ("addresses", WORDS)):
        if draw(st.booleans()):
            action[key] = draw(values)
    if draw(st.integers(0, 19)) == 0:
        action["extra"] = draw(ANY)
    decision: dict[str, Any] = {"verdict": draw(VERDICTS)}
    for key, values in (("rule_id", mostly(st.one_of(st.none(), ASCII), ODD_TEXT)),
                        ("reason", mostly(ASCII, ODD_TEXT)), ("audit_only", mostly(st.booleans()))):
        if draw(st.booleans()):
            decision[key] = draw(values)
    if draw(st.integers(0, 19)) == 0:
        decision["why"] = draw(ANY)
    event: dict[str, Any] = {"type": draw(mostly(st.just("decision"), st.sampled_from(["intent", "connection"]))),
                             "action": draw(mostly(st.just(action))), "decision": draw(mostly(st.just(decision)))}
    if draw(st.integers(0, 19)) == 0:
        event["n"] = 3
    return event


def general(event: Any) -> tuple[dict[str, Any], Verdict] | None:
    """What the daemon records by the general way, and the enforced verdict; None when it is refused or
    is not a decision."""
    try:
        kind, fields = p.parse_record_event(event)
    except p.RequestError:
        return None
    if kind != "decision":
        return None
    record = decision_event("0a1b2c", fields["action"], fields["decision"], source="client", spool=7)
    return record, fields["decision"].enforced


def short(event: Any) -> tuple[dict[str, Any], Verdict] | None:
    shaped = p.trail_decision(event)
    if shaped is None:
        return None
    action, decision, enforced = shaped
    return {"source": "client", "spool": 7, "type": "decision", "session": "0a1b2c", "action": action,
            "decision": decision}, enforced


SPOOLED = {"type": "decision",
           "action": {"kind": "file", "op": "write", "pid": 4242, "target": "/home/e/ws/src/a.py"},
           "decision": {"audit_only": False, "reason": "The agent works on the workspace.",
                        "rule_id": "workspace", "verdict": "allow"}}


@settings(max_examples=3000, deadline=None)
@given(records())
@example(SPOOLED)
@example({**SPOOLED, "action": {"op": "run", "target": "git status", "argv": ["git", "status"], "pid": 9,
                                "exe": "/usr/bin/git", "cwd": "/home/e/ws"}})
@example({**SPOOLED, "action": {"op": "connect", "target": "api.example.test:443", "addresses": []}})
@example({**SPOOLED, "action": {"op": "run", "target": "true", "argv": []}})
@example({**SPOOLED, "decision": {"verdict": "deny"}})
@example({**SPOOLED, "decision": {"verdict": "ask", "audit_only": True, "rule_id": None}})
@example({**SPOOLED, "action": {**SPOOLED["action"], "pid": True}})
@example({**SPOOLED, "action": {**SPOOLED["action"], "argv": None}})
@example({**SPOOLED, "decision": {**SPOOLED["decision"], "audit_only": 1}})
def test_the_short_way_records_exactly_what_the_general_way_records(event: Any) -> None:
    fast = short(event)
    if fast is None:
        return  # the general way judges it, as before
    assert fast == general(event)
    # and the trail's bytes are the same (a dict equal in value encodes alike; say so all the same)
    assert encode(fast[0]) == encode(general(event)[0])  # type: ignore[index]


def test_the_records_guard_run_spools_take_the_short_way() -> None:
    """The short way is the common one: a write, an exec with its argv, a connection's decision."""
    assert p.trail_decision(SPOOLED) is not None
    run = {**SPOOLED, "action": {"kind": "process", "op": "run", "target": "git status", "pid": 9,
                                 "argv": ["git", "status"], "exe": "/usr/bin/git", "cwd": "/home/e/ws"}}
    assert p.trail_decision(run) is not None
    line = orjson.loads(orjson.dumps(SPOOLED))
    action, decision, enforced = p.trail_decision(line)  # type: ignore[misc]
    assert enforced is Verdict.ALLOW and action["kind"] == "file" and decision["rule_id"] == "workspace"


@pytest.mark.parametrize("change", [
    {"action": {**SPOOLED["action"], "target": "/home/e/\u00e9t\u00e9"}},  # non-ASCII: the general way
    {"action": {**SPOOLED["action"], "target": {"b64": "/w8="}}},  # tagged bytes: the general way
    {"action": {**SPOOLED["action"], "pid": 2**53}},  # out of range: refused by the general way
    {"action": {**SPOOLED["action"], "op": "delete"}},
    {"decision": {**SPOOLED["decision"], "verdict": "maybe"}},
    {"decision": {**SPOOLED["decision"], "score": 3}},  # a key the model does not know
    {"extra": 1},
])
def test_what_the_short_way_leaves_to_the_general_way(change: dict[str, Any]) -> None:
    assert p.trail_decision({**SPOOLED, **change}) is None


@settings(max_examples=500, deadline=None)
@given(records())
def test_what_the_short_way_builds_is_plain_for_the_canonical_encoder(event: Any) -> None:
    """Only ASCII keys and JSON scalars: the encoder's own fast path, never its careful one."""
    fast = short(event)
    if fast is not None:
        assert _plain(fast[0])
