from __future__ import annotations

from pathlib import Path

import pytest

from guard.errors import UsageError
from guard.model import Kind, Verdict
from guard.policy import PolicyLoadError, list_shipped, load_policy, shipped_policy_path

from .helpers import WS, act, file, load, write


def test_extends_merges_parents_first_and_child_lists_and_vars_replace_the_parents(tmp_path: Path) -> None:
    write(tmp_path, "parent.yaml", """
        version: 1
        name: parent
        mode: audit
        vars: {root: /srv}
        lists:
          secrets: [/srv/keys/**]
        defaults: {process: allow}
        settings: {ask_timeout: 5}
        rules:
          - {id: root, allow: [read], paths: ["${root}/**"]}
          - {id: secrets, deny: [read], paths: [$secrets]}
    """)
    child = load(tmp_path, """
        version: 1
        extends: [parent.yaml]
        mode: enforce
        vars: {root: /data}
        lists:
          secrets: [/data/private/**]
        network: {hosts: {db.internal: 10.0.0.7}}
        rules:
          - {id: extra, deny: [read], paths: [/data/x]}
    """, name="child.yaml")
    assert [r.id for r in child.rules] == ["root", "secrets", "extra"]
    assert child.decide(file("read", "/data/a")).rule_id == "root"  # parent's rule, child's var
    assert child.decide(file("read", "/srv/a")).verdict is Verdict.DENY
    assert child.decide(file("read", "/data/private/k")).rule_id == "secrets"  # child's list
    assert child.decide(file("read", "/srv/keys/k")).rule_id is None
    assert child.mode == "enforce" and child.ask_timeout == 5.0 and child.name == "child"
    assert child.defaults[Kind.PROCESS] is Verdict.ALLOW
    assert child.sources == ((tmp_path / "parent.yaml").resolve(), (tmp_path / "child.yaml").resolve())
    assert dict(child.host_map) == {"db.internal": "10.0.0.7"}


def test_mode_is_inherited_when_the_child_does_not_set_it(tmp_path: Path) -> None:
    write(tmp_path, "parent.yaml", "version: 1\nmode: audit\n")
    assert load(tmp_path, "version: 1\nextends: parent.yaml\n", name="child.yaml").mode == "audit"


def test_diamond_extends_reads_each_file_once(tmp_path: Path) -> None:
    write(tmp_path, "root.yaml", "version: 1\nrules:\n  - {id: r, allow: [read], paths: [/r/**]}\n")
    write(tmp_path, "left.yaml", "version: 1\nextends: [root.yaml]\n")
    write(tmp_path, "right.yaml", "version: 1\nextends: [root.yaml]\n")
    p = load(tmp_path, "version: 1\nextends: [left.yaml, right.yaml]\n", name="top.yaml")
    assert [r.id for r in p.rules] == ["r"]
    assert [s.name for s in p.sources] == ["root.yaml", "left.yaml", "right.yaml", "top.yaml"]


def test_duplicate_id_across_extends_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "parent.yaml", "version: 1\nrules:\n  - {id: r, allow: [read], paths: [/r/**]}\n")
    with pytest.raises(PolicyLoadError, match=r"child.yaml:4:5: duplicate rule id 'r' \(hint: first defined at "):
        load(tmp_path, "version: 1\nextends: [parent.yaml]\nrules:\n  - {id: r, deny: [read], paths: [/r]}\n",
             name="child.yaml")


def test_extends_a_shipped_policy_by_name(tmp_path: Path) -> None:
    p = load(tmp_path, "version: 1\nextends: [base]\n")
    assert p.decide(file("exec", "/usr/bin/git")).rule_id == "system-read-exec"
    assert p.sources[0] == shipped_policy_path("base").resolve()


def test_builtin_variables_tilde_and_env(tmp_path: Path) -> None:
    p = load(tmp_path, """
        version: 1
        vars: {cache: ~/.cache, deep: "${cache}/deep"}
        rules:
          - {id: ws, allow: [write], paths: ["${workspace}/**"]}
          - {id: home, allow: [read], paths: ["~/notes/**", "${home}/more"]}
          - {id: tmp, allow: [write], paths: ["${tmp}/**"]}
          - {id: env, allow: [read], paths: ["${env:PROJECT_ROOT}/src/**"]}
          - {id: deep, allow: [read], paths: ["${deep}/x"]}
    """, env={"PROJECT_ROOT": "/opt/proj", "TMPDIR": "/var/tmp/me/"})
    assert p.decide(file("write", f"{WS}/a")).rule_id == "ws"
    assert p.decide(file("read", "/home/u/notes/a")).rule_id == "home"
    assert p.decide(file("read", "/home/u/more")).rule_id == "home"
    assert p.decide(file("write", "/var/tmp/me/x")).rule_id == "tmp"
    assert p.decide(file("read", "/opt/proj/src/main.c")).rule_id == "env"
    assert p.decide(file("read", "/home/u/.cache/deep/x")).rule_id == "deep"
    assert p.variables["cache"] == "/home/u/.cache" and p.variables["workspace"] == str(WS)
    assert p.action("read ${deep}/x").target == "/home/u/.cache/deep/x"
    assert p.action("read ~/x").target == "/home/u/x"


def test_lists_nest_and_ports_come_from_lists(tmp_path: Path) -> None:
    p = load(tmp_path, """
        version: 1
        lists:
          web: [80, 443]
          all-ports: [$web, "8000-8999"]
          hosts: [example.com]
        rules:
          - {id: web, allow: [connect], hosts: [$hosts], ports: [$all-ports]}
    """)
    assert p.decide(act("connect example.com:8080")).verdict is Verdict.ALLOW
    assert p.decide(act("connect example.com:22")).verdict is Verdict.DENY


def test_settings_default(tmp_path: Path) -> None:
    assert load(tmp_path, "version: 1\n").ask_timeout == 60.0


def test_shipped_policies_are_listed_and_found() -> None:
    assert {"base", "coding-agent", "review-readonly", "offline"} <= set(list_shipped())
    assert shipped_policy_path("coding-agent").name == "coding-agent.yaml"
    with pytest.raises(UsageError, match="no shipped policy named 'codng-agent'") as info:
        shipped_policy_path("codng-agent")
    assert info.value.hint == "did you mean 'coding-agent'?"
    with pytest.raises(UsageError):
        shipped_policy_path("../etc/passwd")


def test_a_missing_policy_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read policy file"):
        load_policy(tmp_path / "nope.yaml", workspace=WS)
