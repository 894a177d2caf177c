"""`--remember`: an answer to an ask becomes a policy rule the security team can review.

The rules go to `$GUARD_HOME/remembered.yaml`, a policy of its own (lint-clean, with inline tests), never
into a policy a session already uses: every sandbox masks `$GUARD_HOME`, so an agent cannot plant rules
there, and nothing takes effect until someone adopts the file (`extends:` it, or copies rules out of it after
`guard policy diff`). Each rule matches exactly what was answered: a path with every glob character escaped,
one host and port, one command line.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from guard.errors import UsageError

FILE_NAME = "remembered.yaml"
_GLOB = set("\\*?[]{}")


def rule_for(action: Mapping[str, Any], *, allow: bool, rule_id: str, asked_by: str | None, who: str,
             session: str, now: dt.datetime) -> tuple[dict[str, Any], dict[str, str]]:
    """(the rule, its inline test line) matching exactly `action`; UsageError if it cannot be exact."""
    op, target = str(action.get("op", "")), str(action.get("target", ""))
    verdict = "allow" if allow else "deny"
    rule: dict[str, Any] = {"id": rule_id, verdict: [op]}
    if op in ("read", "write", "exec"):
        rule["paths"] = ["".join("\\" + c if c in _GLOB else c for c in target)]
    elif op in ("connect", "listen"):
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit():
            raise UsageError(f"cannot remember {op} {target!r}: expected host:port")
        rule["hosts"] = [host.strip("[]")]
        rule["ports"] = [int(port)]
    elif op == "run":
        if "..." in target.split():
            raise UsageError("cannot remember a command line holding '...' exactly "
                             "(it is the pattern wildcard)", hint="write the rule by hand")
        rule["commands"] = [target]
    else:
        raise UsageError(f"cannot remember an answer to a {op!r} action")
    stamp = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    rule["reason"] = (f"{'approved' if allow else 'denied'} by {who} at {stamp} for session {session}"
                      + (f" (rule {asked_by} asked)" if asked_by else ""))
    return rule, {f"{op} {target}": verdict}  # an inline test, `- op target: verdict`


def remember(home: Path, action: Mapping[str, Any], *, allow: bool, asked_by: str | None, who: str,
             session: str, now: dt.datetime | None = None) -> tuple[Path, str]:
    """Append the rule to `$GUARD_HOME/remembered.yaml` (atomically, 0600) -> (file, rule id)."""
    path = home / FILE_NAME
    doc: dict[str, Any] = {"version": 1, "name": "remembered",
                           "description": "Answers to asks given with --remember. Review them "
                                          "(guard policy diff coding-agent THIS_FILE) before adopting any.",
                           "rules": [], "tests": []}
    if path.exists():
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict) or not isinstance(loaded.get("rules", []), list):
            raise UsageError(f"{path} is not a policy with a list of rules",
                             hint="fix or move it, then retry")
        doc.update(loaded)
    rules: list[dict[str, Any]] = list(doc.get("rules") or [])
    ids = {str(r.get("id")) for r in rules if isinstance(r, dict)}
    n = len(rules) + 1
    while f"remembered-{n}" in ids:
        n += 1
    rule, test = rule_for(action, allow=allow, rule_id=f"remembered-{n}", asked_by=asked_by, who=who,
                          session=session, now=now or dt.datetime.now(dt.UTC))
    doc["rules"] = [*rules, rule]
    doc["tests"] = [*list(doc.get("tests") or []), test]
    tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        yaml.safe_dump(doc, f, sort_keys=False, allow_unicode=True, width=110)
    os.replace(tmp, path)
    return path, rule["id"]
