"""--remember writes rules that match exactly what was answered, never a wider pattern."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from guard.errors import UsageError
from guard.policy import load_policy
from guard.remember import remember, rule_for

NOW = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)


def test_glob_characters_in_a_remembered_path_are_literal(tmp_path: Path) -> None:
    target = str(tmp_path / "a*b?[c]{d}\\e")
    path, rule_id = remember(tmp_path, {"op": "write", "target": target}, allow=True, asked_by="x", who="eng",
                             session="s1", now=NOW)
    assert (path.stat().st_mode & 0o777) == 0o600 and rule_id == "remembered-1"
    policy = load_policy(str(path), workspace=tmp_path, env={"HOME": str(tmp_path)})
    from guard.model import Action, Op, Verdict

    assert policy.decide(Action(Op.WRITE, target)).verdict is Verdict.ALLOW
    assert policy.decide(Action(Op.WRITE, str(tmp_path / "aXXb!cd\\e"))).verdict is Verdict.DENY
    _, second = remember(tmp_path, {"op": "connect", "target": "pypi.internal:8443"}, allow=False, asked_by=None,
                         who="eng", session="s2", now=NOW)
    assert second == "remembered-2"


@pytest.mark.parametrize(("action", "match"), [
    ({"op": "run", "target": "git push ... --force"}, "wildcard"),
    ({"op": "connect", "target": "no-port"}, "host:port"),
])
def test_answers_that_cannot_be_remembered_exactly_are_refused(action: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        rule_for(action, allow=True, rule_id="r", asked_by=None, who="e", session="s", now=NOW)
