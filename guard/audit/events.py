"""Constructors for the records the daemon appends (the writer adds `seq` and `ts`)."""

from __future__ import annotations

from typing import Any

from guard.model import Action, Decision


def decision_event(session: str, action: Action, decision: Decision, **extra: Any) -> dict[str, Any]:
    """One policy decision about one action, as the trail records it."""
    return {**extra, "type": "decision", "session": session, "action": action.to_dict(),
            "decision": decision.to_dict()}


def session_event(session: str, what: str, **extra: Any) -> dict[str, Any]:
    """A session's lifecycle ("start", "end", ...); extra carries policy name, workspace, exit status."""
    return {**extra, "type": "session", "session": session, "event": what}
