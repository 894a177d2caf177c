"""Every lint error class, each shown with its FILE:LINE:COL."""

from __future__ import annotations

from pathlib import Path

import pytest

from guard.policy import PolicyLoadError, load_policy
from guard.policy.lint import lint

from .helpers import HOME, WS, errors, write

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_yaml_syntax_error(tmp_path: Path) -> None:
    [error] = errors(tmp_path, """
        version: 1
        rules:
          - id: a
            allow: [read
    """)
    # the wording is the YAML parser's (libyaml or pure Python); the location is ours
    assert error.startswith("p.yaml:5:1: YAML syntax: ") and "',' or ']'" in error


def test_unknown_keys_with_did_you_mean(tmp_path: Path) -> None:
    out = errors(tmp_path, """
        version: 1
        rulez: []
        rules:
          - id: a
            allow: [read]
            pathz: [/a]
    """)
    assert out == [
        "p.yaml:2:1: unknown top-level key 'rulez' (hint: did you mean 'rules'?)",
        "p.yaml:4:5: a read rule needs 'paths'",
        "p.yaml:6:5: unknown rule key 'pathz' (hint: did you mean 'paths'?)",
    ]


def test_wrong_types(tmp_path: Path) -> None:
    out = errors(tmp_path, """
        version: 1
        name: [x]
        defaults: deny
        rules:
          - id: a
            allow: [read]
            paths: /a/**
          - id: b
            allow: [read]
            paths: [{x: 1}]
    """)
    assert out == [
        "p.yaml:2:7: 'name' must be a string, not a list",
        "p.yaml:3:11: 'defaults' must be a mapping, not a string",
        "p.yaml:7:12: 'paths' must be a list, not a string",
        "p.yaml:10:13: each entry of 'paths' must be a string, not a mapping "
        "(hint: quote entries that start with '*' or contain ': ')",
    ]


def test_bad_globs(tmp_path: Path) -> None:
    out = errors(tmp_path, """
        version: 1
        rules:
          - id: a
            deny: [read]
            paths: ["/a/b**", "/c/[x", "relative/x"]
    """)
    assert out == [
        "p.yaml:5:13: bad glob: '**' must be a whole path segment in '/a/b**'; write '*' to stay within one segment",
        "p.yaml:5:23: bad glob: unclosed '[' in '/c/[x'",
        "p.yaml:5:32: bad glob: path pattern 'relative/x' is not absolute "
        "(hint: start it with '/', '~/', '${workspace}/' or '**/' (matches at any depth))",
    ]


def test_undefined_list_and_var(tmp_path: Path) -> None:
    out = errors(tmp_path, """
        version: 1
        vars: {cache: ~/.cache}
        lists:
          secrets: [~/.ssh/**]
        rules:
          - id: a
            deny: [read]
            paths: [$secret, "${cahce}/x", "${nothing}/y"]
    """)
    assert out == [
        "p.yaml:8:13: undefined list $secret (hint: did you mean 'secrets'?)",
        "p.yaml:8:22: undefined variable ${cahce} (hint: did you mean 'cache'?)",
        "p.yaml:8:36: undefined variable ${nothing} (hint: define it under 'vars:' (built in: ${workspace}, "
        "${home}, ${tmp}, ${guard_code}, ${python_prefix}, ${python_base}, ${env:NAME}))",
    ]


def test_unset_environment_variable(tmp_path: Path) -> None:
    out = errors(tmp_path, """
        version: 1
        rules:
          - id: a
            deny: [read]
            paths: ["${env:GUARD_TEST_UNSET}/x"]
    """)
    assert out == ["p.yaml:5:13: environment variable GUARD_TEST_UNSET (used as ${env:GUARD_TEST_UNSET}) is not set"]


def test_duplicate_ids(tmp_path: Path) -> None:
    out = errors(tmp_path, """
        version: 1
        rules:
          - id: a
            deny: [read]
            paths: [/a]
          - id: a
            deny: [read]
            paths: [/b]
    """)
    assert out == ["p.yaml:6:5: duplicate rule id 'a' (hint: first defined at p.yaml:3:5)"]


def test_matcher_that_does_not_fit_the_operation(tmp_path: Path) -> None:
    out = errors(tmp_path, """
        version: 1
        rules:
          - id: a
            allow: [read]
            paths: [/a]
            hosts: [example.com]
          - id: b
            allow: [connect]
            commands: ["git push"]
    """)
    assert out == [
        "p.yaml:6:5: 'hosts' does not apply to read: file rules take 'paths'",
        "p.yaml:7:5: a connect rule needs 'hosts' or 'cidrs' (hint: use hosts: ['*'] for any host)",
        "p.yaml:9:5: 'commands' does not apply to connect: network rules take 'hosts' / 'cidrs' / 'ports'",
    ]


def test_operations_and_verdicts(tmp_path: Path) -> None:
    out = errors(tmp_path, """
        version: 1
        rules:
          - id: a
            allow: [raed]
            paths: [/a]
          - id: b
            allow: [read, connect]
            paths: [/a]
          - id: c
            allow: [read]
            deny: [write]
            paths: [/a]
          - id: d
            mode: enforced
            ask: [run]
            commands: ["git push"]
    """)
    assert out == [
        "p.yaml:4:13: unknown operation 'raed' (hint: did you mean 'read'?)",
        "p.yaml:7:12: a rule's operations must be of one kind, but connect, read mix file, network "
        "(hint: split it into one rule per kind)",
        "p.yaml:11:5: a rule needs exactly one of 'allow', 'deny' or 'ask' listing its operations (found allow, deny)",
        "p.yaml:14:11: 'mode' must be one of enforce, audit, not 'enforced' (hint: did you mean 'enforce'?)",
    ]


def test_network_values(tmp_path: Path) -> None:
    out = errors(tmp_path, """
        version: 1
        rules:
          - id: a
            allow: [connect]
            hosts: ["api.*.com"]
            ports: [0, "9-1"]
            cidrs: [10.0.0.1/8]
    """)
    assert out == [
        "p.yaml:5:13: bad host pattern 'api.*.com': '*' is allowed only as a leading '*.' label "
        "(or '*' alone for any host)",
        "p.yaml:6:13: bad port 0: ports are 1-65535",
        "p.yaml:6:16: bad port range '9-1': the start is above the end",
        "p.yaml:7:13: bad CIDR '10.0.0.1/8': host bits are set; did you mean 10.0.0.0/8?",
    ]


def test_version_tests_and_settings(tmp_path: Path) -> None:
    out = errors(tmp_path, """
        version: 2
        settings: {ask_timeout: -1}
        network: {hosts: {db.internal: not-an-ip}}
        tests:
          - read /a: maybe
          - frobnicate /a: deny
          - just a string
    """)
    assert out == [
        "p.yaml:1:10: unsupported policy version: this guard reads 'version: 1'",
        "p.yaml:2:25: 'settings.ask_timeout' must be a positive number of seconds",
        "p.yaml:3:32: 'network.hosts.db.internal' must be an IP address",
        "p.yaml:5:14: 'expected verdict' must be one of allow, ask, deny, not 'maybe'",
        "p.yaml:6:5: bad test 'frobnicate /a': unknown operation 'frobnicate' in 'frobnicate /a' "
        "(hint: write '<op> <target>' with op one of: read, write, exec, connect, listen, run)",
        "p.yaml:7:5: a test is one '<op> <target>: <verdict>' entry",
    ]


def test_extends_cycle_names_the_chain(tmp_path: Path) -> None:
    write(tmp_path, "b.yaml", "version: 1\nextends: [c.yaml]\n")
    write(tmp_path, "c.yaml", "version: 1\nextends: [a.yaml]\n")
    path = write(tmp_path, "a.yaml", "version: 1\nextends: [b.yaml]\n")
    result = errors(tmp_path, path.read_text(), "a.yaml")
    assert result == ["c.yaml:2:11: extends cycle: a.yaml -> b.yaml -> c.yaml -> a.yaml"]


def test_extends_unknown(tmp_path: Path) -> None:
    assert errors(tmp_path, "version: 1\nextends: [coding-agnet, missing.yaml]\n") == [
        "p.yaml:2:11: no shipped policy named 'coding-agnet' (hint: did you mean 'coding-agent'?)",
        "p.yaml:2:25: extends: no policy file missing.yaml (hint: paths are relative to this file)",
    ]


def test_variable_and_list_cycles(tmp_path: Path) -> None:
    out = errors(tmp_path, """
        version: 1
        vars: {a: "${b}", b: "/x${a}"}
        lists: {l1: [$l2], l2: [$l1]}
        rules:
          - id: r
            deny: [read]
            paths: ["${a}", $l1]
    """)
    assert out == [
        "p.yaml:2:11: variable cycle: a -> b -> a",
        "p.yaml:3:25: list cycle: l1 -> l2 -> l1",
    ]


def test_lint_collects_all_errors_and_load_raises_them_together(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", """
        version: 1
        rules:
          - id: a
            allow: [raed]
            paths: [/a]
          - id: b
            deny: [read]
            paths: ["/b/[x"]
          - id: b
            deny: [read]
            paths: [$nope]
    """)
    report = lint(path, workspace=WS, home=HOME, env={})
    assert not report.ok
    assert [(d.location.line, d.location.col) for d in report.diagnostics] == [(4, 13), (8, 13), (9, 5), (11, 13)]
    with pytest.raises(PolicyLoadError) as info:
        load_policy(path, workspace=WS, home=HOME, env={})
    assert len(info.value.diagnostics_list) == 4
    assert "p.yaml:8:13: bad glob" in str(info.value)


def test_empty_and_non_mapping_files(tmp_path: Path) -> None:
    assert errors(tmp_path, "") == ["p.yaml:1:1: empty policy file (hint: start with 'version: 1')"]
    assert errors(tmp_path, "- a\n- b\n") == ["p.yaml:1:1: a policy must be a mapping, not a list"]
    assert errors(tmp_path, "rules: []\n") == ["p.yaml:1:1: missing 'version: 1'"]


def test_missing_file_is_a_diagnostic_in_lint(tmp_path: Path) -> None:
    report = lint(tmp_path / "nope.yaml", workspace=WS, home=HOME, env={})
    assert not report.ok
    assert "cannot read policy file" in report.diagnostics[0].message


def test_alias_bombs_and_deep_nesting_are_errors_not_hangs(tmp_path: Path) -> None:
    bomb = ["version: 1", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    bomb += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    out = errors(tmp_path, "\n".join(bomb) + "\n")
    assert len(out) == 1 and "YAML expands to more than 200000 nodes (aliases?)" in out[0]
    out = errors(tmp_path, "version: 1\nx: " + "[" * 70 + "]" * 70 + "\n")
    assert out == ["p.yaml:2:68: YAML nesting deeper than 64 levels"]


def test_unreadable_policy_file_is_located(tmp_path: Path) -> None:
    (tmp_path / "bin.yaml").write_bytes(b"version: 1\n\xff\xfe\n")
    assert errors(tmp_path, "version: 1\nextends: [bin.yaml]\n")[0].startswith(
        "p.yaml:2:11: cannot read bin.yaml: 'utf-8' codec can't decode byte 0xff")
