"""Policy settings: the ask timeout and the launch scan's budget, inherited and overridden."""

from __future__ import annotations

from pathlib import Path

from .helpers import errors, load, write


def test_defaults_and_a_child_overriding_one_setting(tmp_path: Path) -> None:
    base = load(tmp_path, "version: 1\nname: b\n", name="b.yaml")
    assert (base.ask_timeout, base.scan_max_entries) == (60.0, 200_000)
    write(tmp_path, "parent.yaml", "version: 1\nname: parent\nsettings: {ask_timeout: 5, scan_max_entries: 50}\n")
    child = load(tmp_path, "version: 1\nname: child\nextends: [parent.yaml]\nsettings: {scan_max_entries: 7}\n")
    assert (child.ask_timeout, child.scan_max_entries) == (5.0, 7)


def test_bad_settings_are_located(tmp_path: Path) -> None:
    found = errors(tmp_path, """
        version: 1
        settings: {ask_timeout: 0, scan_max_entries: 1.5, scan_max: 3}
    """)
    assert any(e.startswith("p.yaml:2:25: 'settings.ask_timeout' must be a positive number") for e in found), found
    assert any(e.startswith("p.yaml:2:46: 'settings.scan_max_entries' must be a positive whole number")
               for e in found), found
    assert any("scan_max" in e and "did you mean" in e for e in found), found


def test_pass_env_is_a_list_of_names_and_a_child_replaces_it(tmp_path: Path) -> None:
    write(tmp_path, "parent.yaml", "version: 1\nname: parent\nsettings: {pass_env: [ANTHROPIC_API_KEY, 'MY_*']}\n")
    parent = load(tmp_path, "version: 1\nname: p2\nextends: [parent.yaml]\n", name="p2.yaml")
    assert parent.pass_env == ("ANTHROPIC_API_KEY", "MY_*")
    child = load(tmp_path, "version: 1\nname: child\nextends: [parent.yaml]\nsettings: {pass_env: [X]}\n")
    assert child.pass_env == ("X",)
    assert load(tmp_path, "version: 1\nname: none\n", name="none.yaml").pass_env == ()
    found = errors(tmp_path, "version: 1\nsettings: {pass_env: ['A-B']}\n")
    assert any("'settings.pass_env': 'A-B' is not an environment variable name" in e for e in found), found


def test_shipped_coding_agent_passes_only_model_keys(tmp_path: Path) -> None:
    from guard.policy import load_policy

    policy = load_policy("coding-agent", workspace=tmp_path)
    assert policy.pass_env == ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY")


def test_writes_private_fits_only_allow_rules_with_write(tmp_path: Path) -> None:
    found = errors(tmp_path, """
        version: 1
        rules:
          - id: r
            deny: [write]
            paths: [/x/**]
            writes: private
    """)
    assert any("'writes: private'" in e and "not deny: write" in e for e in found), found
    ok = load(tmp_path, """
        version: 1
        name: ok
        rules:
          - id: c
            allow: [read, write]
            paths: [/x/**]
            writes: private
    """, name="ok.yaml")
    assert [r.private for r in ok.rules] == [True]
    assert [r.private for r in ok.file_rules()] == [True]
