"""`applies_to: existing`: a write rule that protects what exists when a session starts."""

from __future__ import annotations

from pathlib import Path

from guard.model import Action, Op, Verdict

from .helpers import errors, load

POLICY = """
    version: 1
    name: t
    rules:
      - {id: ws, allow: [read, write], paths: ["${workspace}/**"]}
      - id: repo-config
        ask: [write]
        paths: ["${workspace}/**/.git/config"]
        applies_to: existing
      - {id: hooks, deny: [write], paths: ["${workspace}/**/.git/hooks/*"]}
"""


def test_existing_only_rules_are_listed_and_reach_the_planner(tmp_path: Path) -> None:
    policy = load(tmp_path, POLICY)
    assert policy.existing_only_rules == frozenset({"repo-config"})
    by_id = {r.rule_id: r for r in policy.file_rules()}
    assert by_id["repo-config"].existing_only and not by_id["hooks"].existing_only


def test_without_a_session_the_rule_applies_and_a_session_can_leave_it_out(tmp_path: Path) -> None:
    policy = load(tmp_path, POLICY)
    write = Action(Op.WRITE, "/work/ws/.git/config")
    assert policy.decide(write).verdict is Verdict.ASK  # explain and tests: the path is taken as existing
    left_out = policy.decide(write, ignore=policy.existing_only_rules)
    assert (left_out.verdict, left_out.rule_id) == (Verdict.ALLOW, "ws")
    # ignoring one rule never removes another
    hook = Action(Op.WRITE, "/work/ws/.git/hooks/pre-commit")
    assert policy.decide(hook, ignore=policy.existing_only_rules).verdict is Verdict.DENY
    # the cache keeps the two questions apart
    assert policy.decide(write).verdict is Verdict.ASK


def test_applies_to_fits_only_write_rules(tmp_path: Path) -> None:
    assert errors(tmp_path, """
        version: 1
        rules:
          - id: r
            deny: [read, write]
            paths: ["/x/**"]
            applies_to: existing
    """) == ["p.yaml:6:5: 'applies_to: existing' protects files that exist at launch from being changed: it "
             "fits only write rules, not read, write (hint: remove it, or split the write operation into "
             "its own rule)"]


def test_applies_to_takes_any_or_existing(tmp_path: Path) -> None:
    [error] = errors(tmp_path, """
        version: 1
        rules:
          - {id: r, deny: [write], paths: ["/x/**"], applies_to: later}
    """)
    assert error.startswith("p.yaml:3:") and "applies_to" in error


NEW_REPOS = """
    version: 1
    name: t
    rules:
      - {id: ws, allow: [read, write], paths: ["${workspace}/**"]}
      - id: settings
        ask: [write]
        paths: ["${workspace}/**/.vscode/**"]
        applies_to: outside-new-repos
"""


def test_outside_new_repos_rules_are_listed_and_a_session_can_leave_them_out(tmp_path: Path) -> None:
    policy = load(tmp_path, NEW_REPOS)
    assert policy.outside_new_repos_rules == frozenset({"settings"})
    assert policy.existing_only_rules == frozenset()
    write = Action(Op.WRITE, "/work/ws/clone/.vscode/settings.json")
    assert policy.decide(write).verdict is Verdict.ASK  # explain and tests: no session, the rule holds
    left_out = policy.decide(write, ignore=policy.outside_new_repos_rules)
    assert (left_out.verdict, left_out.rule_id) == (Verdict.ALLOW, "ws")


def test_outside_new_repos_fits_only_write_rules(tmp_path: Path) -> None:
    assert errors(tmp_path, """
        version: 1
        rules:
          - {id: r, ask: [read, write], paths: ["/x/**"], applies_to: outside-new-repos}
    """) == ["p.yaml:3:51: 'applies_to: outside-new-repos' leaves out repositories created during the session: "
             "it fits only write rules, not read, write (hint: remove it, or split the write operation into "
             "its own rule)"]
