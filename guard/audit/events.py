"""Constructors for the records the daemon appends (the writer adds `seq` and `ts`).

This is where a record's values take their recorded form: strings that are not valid UTF-8 (paths, argv
words, environment values in file-system form) become `{"b64": ...}` (guard.text.to_record), and durations
are integer milliseconds (`ms`), because the canonical encoding holds no floats (guard.audit.canon).
"""

from __future__ import annotations

from typing import Any

from guard.model import Action, Decision
from guard.text import to_record_deep


def decision_event(session: str, action: Action, decision: Decision, **extra: Any) -> dict[str, Any]:
    """One policy decision about one action, as the trail records it."""
    return {**to_record_deep(extra), "type": "decision", "session": session, "action": action.to_dict(),
            "decision": decision.to_dict()}


def session_event(session: str, what: str, **extra: Any) -> dict[str, Any]:
    """A session's lifecycle ("start", "end", ...); extra carries policy name, workspace, exit status."""
    return {**to_record_deep(extra), "type": "session", "session": session, "event": what}


def ms(seconds: float) -> int:
    """A duration as the trail records it: whole milliseconds, rounded, never negative."""
    return max(0, round(seconds * 1000))
