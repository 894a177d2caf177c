"""`guard policy lint|test|explain|diff|list` through click's runner and once as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from guard.cli.main import main

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(str(p) for p in (REPO / "policies").glob("*.yaml"))


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def write(tmp: Path, name: str, body: str) -> Path:
    path = tmp / name
    path.write_text(textwrap.dedent(body).lstrip("\n"))
    return path


def test_policy_test_passes_on_every_shipped_policy(tmp_path: Path) -> None:
    assert len(SHIPPED) >= 4
    code, out = run("policy", "test", "--workspace", str(tmp_path), *SHIPPED)
    assert code == 0, out
    for path in SHIPPED:
        assert f"{path}: " in out and " 0 failed; " in out
    assert "(100%)" in out


def test_policy_test_as_a_real_process_from_the_home_directory(isolated_home: Path) -> None:
    # run from $HOME: the tests use a fixed workspace, so the home directory is not granted as one
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "guard", "policy", "test", "--json", *SHIPPED],
                          cwd=isolated_home, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    data = json.loads(proc.stdout)
    assert data["ok"] is True
    assert {Path(p["file"]).stem for p in data["policies"]} == {Path(p).stem for p in SHIPPED}
    assert all(p["failed"] == 0 and p["passed"] > 0 for p in data["policies"])


def test_policy_test_reports_failures_with_their_line(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", """
        version: 1
        rules:
          - {id: a, allow: [read], paths: [/a/**]}
          - {id: b, deny: [read], paths: [/b/**]}
        tests:
          - read /a/x: allow
          - read /a/y: deny
    """)
    code, out = run("policy", "test", str(path))
    assert code == 1
    assert f"{path}:7:5: FAIL read /a/y: expected deny, got allow (rule 'a': allowed by rule 'a')" in out
    assert "1 passed, 1 failed; 1/2 rules exercised (50%); not exercised: b" in out
    code, out = run("policy", "test", "--json", str(path))
    data = json.loads(out)
    assert code == 1 and data["ok"] is False
    assert data["policies"][0]["coverage"]["uncovered"] == ["b"]


def test_policy_test_fails_on_a_policy_that_does_not_load(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", "version: 1\nrules: [{id: a, allow: [raed], paths: [/a]}]\n")
    code, out = run("policy", "test", str(path))
    assert code == 1 and "p.yaml:2:25: unknown operation 'raed'" in out


def test_lint_prints_every_error_with_location_and_exits_1(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", """
        version: 1
        rules:
          - id: a
            allow: [read]
            hosts: [x.com]
            paths: ["/a/b"]
          - id: b
            deny: [read]
            paths: [$nope, "/a/b**"]
          - id: b
            deny: [read]
            paths: [/c]
    """)
    code, out = run("policy", "lint", str(path))
    assert code == 1
    assert f"{path}:5:5: 'hosts' does not apply to read: file rules take 'paths'" in out
    assert f"{path}:9:13: undefined list $nope" in out
    assert f"{path}:9:20: bad glob: '**' must be a whole path segment" in out
    assert f"{path}:10:5: duplicate rule id 'b'" in out
    assert "Traceback" not in out
    code, out = run("policy", "lint", "--json", str(path))
    data = json.loads(out)
    assert code == 1 and [(d["line"], d["col"]) for d in data["policies"][0]["diagnostics"]] == [(5, 5), (9, 13),
                                                                                                  (9, 20), (10, 5)]


def test_lint_yaml_syntax_error_is_located_never_a_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", "version: 1\nrules:\n  - id: a\n    allow: [read\n")
    code, out = run("policy", "lint", str(path))
    assert code == 1 and f"{path}:5:1: YAML syntax:" in out and "Traceback" not in out


def test_lint_warnings(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", """
        version: 1
        lists:
          unused: [/x]
        rules:
          - {id: all-secrets, deny: [read, write], paths: [/s/**]}
          - {id: shadowed, allow: [read], paths: [/s/docs/**]}
          - {id: untested, allow: [read], paths: [/u/**]}
          - {id: net-deny, deny: [connect], hosts: ["*.corp.example"]}
          - {id: net-shadowed, allow: [connect], hosts: [git.corp.example], ports: [443]}
          - {id: cmd-deny, deny: [run], commands: ["git push ..."]}
          - {id: cmd-shadowed, ask: [run], commands: ["git push origin ..."]}
        tests:
          - read /s/docs/a: deny
          - connect git.corp.example:443: deny
          - run git push origin main: deny
    """)
    code, out = run("policy", "lint", str(path))
    assert code == 0, out
    assert f"{path}:3:3: warning: list 'unused' is never used" in out
    assert f"{path}:6:5: warning: rule 'shadowed' never decides anything: the broader deny rule 'all-secrets'" in out
    assert f"{path}:7:5: warning: no test exercises rule 'untested'" in out
    assert "rule 'net-shadowed' never decides anything" in out
    assert "rule 'cmd-shadowed' never decides anything" in out
    assert "(0 error(s), 5 warning(s))" in out


def test_explain_shipped_policy_by_name(tmp_path: Path, isolated_home: Path) -> None:
    code, out = run("policy", "explain", "coding-agent", "read ~/.ssh/id_rsa", "--workspace", str(tmp_path))
    assert code == 0
    assert out.splitlines()[0] == f"DENY  read {isolated_home}/.ssh/id_rsa"
    assert "rule:   credentials (" in out and "coding-agent.yaml:" in out
    assert "reason: Credentials stay out of agent sessions" in out


def test_explain_json_lists_losers_and_parts(tmp_path: Path) -> None:
    code, out = run("policy", "explain", "--json", "--workspace", str(tmp_path), "coding-agent",
                    "run", "make", "&&", "git", "push", "-f")
    data = json.loads(out)
    assert code == 0
    assert data["decision"]["verdict"] == "deny" and data["winner"] == "force-push"
    assert [p["decision"]["verdict"] for p in data["parts"]] == ["allow", "deny"]
    assert data["parts"][1]["losers"][0]["rule_id"] == "publish"


def test_explain_relative_path_uses_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = run("policy", "explain", "coding-agent", "read src/main.py")
    assert code == 0 and out.startswith(f"ALLOW  read {tmp_path}/src/main.py")


def test_explain_errors_are_reported_not_raised(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["policy", "explain", "coding-agnet", "read /x"])
    assert result.exit_code == 2 and "no shipped policy named 'coding-agnet'" in result.output
    result = CliRunner().invoke(main, ["policy", "explain", "base", "fly /x"])
    assert result.exit_code == 2 and "unknown operation 'fly'" in result.output


def test_diff_reports_loosening(tmp_path: Path) -> None:
    old = write(tmp_path, "old.yaml", """
        version: 1
        rules:
          - {id: a, deny: [read], paths: [/s/**]}
          - {id: b, allow: [read], paths: [/p/**]}
        tests:
          - read /s/x: deny
    """)
    new = write(tmp_path, "new.yaml", """
        version: 1
        defaults: {process: allow}
        rules:
          - {id: b, allow: [read], paths: [/p/**, /s/**]}
          - {id: c, ask: [run], commands: ["git push ..."]}
        tests:
          - read /s/x: allow
    """)
    code, out = run("policy", "diff", str(old), str(new))
    assert code == 1
    assert "added    rule c" in out and "removed  rule a" in out and "changed  rule b" in out
    assert "default  process: deny -> allow" in out
    assert "decision read /s/x: deny -> allow  LOOSER" in out
    code, out = run("policy", "diff", "--json", str(new), str(old))
    data = json.loads(out)
    assert code == 0 and data["loosened"] is False and data["added"] == ["a"]


def test_list_shipped() -> None:
    code, out = run("policy", "list")
    assert code == 0 and {"base", "coding-agent", "offline", "review-readonly"} <= set(out.split())


@pytest.mark.parametrize("command", ["lint", "test", "explain", "diff", "list"])
def test_every_command_takes_json(command: str) -> None:
    code, out = run("policy", command, "--help")
    assert code == 0 and "--json" in out
