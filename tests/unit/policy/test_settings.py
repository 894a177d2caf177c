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
