from __future__ import annotations

import pytest

from guard.policy.commands import CommandPatternError, compile_command


@pytest.mark.parametrize(("pattern", "argv", "expected"), [
    ("git push ...", ("git", "push"), True),  # ... is zero or more
    ("git push ...", ("/usr/bin/git", "push", "origin", "main"), True),  # basename of the program
    ("git push ...", ("git", "pull"), False),
    ("git push", ("git", "push", "origin"), False),  # no ... means exactly these words
    ("git push ... --force*", ("git", "push", "origin", "main", "--force-with-lease"), True),
    ("git push ... --force*", ("git", "push", "--force", "origin"), False),  # must be last
    ("git push ... --force* ...", ("git", "push", "--force", "origin"), True),
    ("git push ... -[!-]*f* ...", ("git", "push", "-uf", "origin"), True),
    ("git push ... -[!-]*f* ...", ("git", "push", "--follow-tags"), False),
    ("/usr/bin/git ...", ("/usr/bin/git", "status"), True),  # a slash means the full path
    ("/usr/bin/git ...", ("git", "status"), False),
    ("py* -m pip ...", ("python3", "-m", "pip", "install", "x"), True),
    ("rm ... -rf ... /", ("rm", "-v", "-rf", "--", "/"), True),
    ("make", ("make",), True),
])
def test_command_patterns(pattern: str, argv: tuple[str, ...], expected: bool) -> None:
    assert compile_command(pattern).matches(argv) is expected


def test_loose_matching_allows_a_trailing_remainder() -> None:
    pattern = compile_command("sudo")
    assert not pattern.matches(("sudo", "tee", "/etc/x"))
    assert pattern.matches(("sudo", "tee", "/etc/x"), prefix=True)


@pytest.mark.parametrize(("pattern", "message"), [
    ("", "empty"),
    ("... rm", "must name a program"),
    ("git 'push", "No closing quotation"),
    ("git [push", "unbalanced"),
])
def test_bad_command_patterns(pattern: str, message: str) -> None:
    with pytest.raises(CommandPatternError, match=message):
        compile_command(pattern)
