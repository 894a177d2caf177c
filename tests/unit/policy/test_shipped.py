"""The shipped policies load by name, pass their own tests and keep the promises the issue lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from guard.model import Verdict
from guard.policy import list_shipped, load_policy
from guard.policy.lint import lint
from guard.policy.testing import run_tests

from .helpers import HOME, WS


@pytest.mark.parametrize("name", ["base", "coding-agent", "review-readonly", "offline"])
def test_shipped_policy_tests_pass_and_cover_every_rule(name: str) -> None:
    policy = load_policy(name, workspace=WS, home=HOME, env={})
    own = tuple(r.id for r in policy.rules if str(r.location.file).endswith(f"{name}.yaml"))
    report = run_tests(policy, own)
    assert report.results, f"{name} has no tests"
    assert not report.failures, [(f.test.text, f.decision) for f in report.failures]
    assert report.uncovered == ()


@pytest.mark.parametrize("name", ["base", "coding-agent", "review-readonly", "offline"])
def test_shipped_policies_lint_clean(name: str) -> None:
    report = lint(name, workspace=WS, home=HOME, env={})
    assert [str(d) for d in report.diagnostics] == []


def test_every_shipped_policy_denies_credentials_and_system_writes() -> None:
    for name in list_shipped():
        p = load_policy(name, workspace=WS, home=HOME, env={})
        for text in ("read ~/.ssh/id_ed25519", "write /etc/passwd", "write /usr/bin/ls", "read ~/.aws/credentials"):
            assert p.decide(p.action(text)).verdict is Verdict.DENY, (name, text)


def test_coding_agent_is_usable_from_a_workspace_under_home(tmp_path: Path) -> None:
    ws = HOME / "src" / "proj"
    p = load_policy("coding-agent", workspace=ws, home=HOME, env={})
    assert p.decide(p.action(f"write {ws}/main.py")).verdict is Verdict.ALLOW
    assert p.decide(p.action(f"write {ws}/.git/hooks/pre-commit")).verdict is Verdict.DENY
    assert p.decide(p.action(f"read {ws}/.env")).verdict is Verdict.DENY
    assert p.decide(p.action("read ~/.gitconfig")).verdict is Verdict.ALLOW
    assert p.decide(p.action("write ~/.claude/projects/x.jsonl")).verdict is Verdict.ALLOW


def test_shipped_policies_match_the_editor_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed")
    import json

    import yaml

    from guard.policy import shipped_policy_path

    schema = json.loads((shipped_policy_path("base").parent / "schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    for name in list_shipped():
        jsonschema.validate(yaml.safe_load(shipped_policy_path(name).read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"version": 1, "rules": [{"id": "x", "allow": ["raed"], "paths": ["/a"]}]}, schema)


def test_shipped_files_are_packaged_through_the_data_link() -> None:
    # pyproject's package-data takes guard/data/policies/*.yaml and *.json; that directory must be the
    # repository's policies/ so a non-editable install carries the same files.
    from guard.policy import shipped_policy_path

    repo = Path(__file__).resolve().parents[3]
    link = repo / "guard" / "data" / "policies"
    assert link.is_symlink() and link.resolve() == (repo / "policies").resolve()
    assert shipped_policy_path("coding-agent").resolve() == (repo / "policies" / "coding-agent.yaml").resolve()
    assert (link / "schema.json").is_file()
