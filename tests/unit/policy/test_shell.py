from __future__ import annotations

import pytest

from guard.policy.shell import Unparseable, loose_tokens, split_commands


@pytest.mark.parametrize(("line", "expected"), [
    ("git push origin main", [("git", "push", "origin", "main")]),
    ("make && git push -f", [("make",), ("git", "push", "-f")]),
    ("a || b; c | d & e", [("a",), ("b",), ("c",), ("d",), ("e",)]),
    ("echo 'a && b' \"c; d\"", [("echo", "a && b", "c; d")]),
    ("echo a\\ b", [("echo", "a b")]),
    ("FOO=1 BAR=2 git push", [("git", "push")]),
    ("env -i A=b -u HOME git push", [("git", "push")]),
    ("nohup nice -n 5 git push", [("git", "push")]),
    ("nice -10 git push", [("git", "push")]),
    ("timeout -s KILL --foreground 10s git push", [("git", "push")]),
    ("stdbuf -oL -e 0 git push", [("git", "push")]),
    ("time -p git push", [("git", "push")]),
    ("/usr/bin/env FOO=1 /usr/bin/git push", [("/usr/bin/git", "push")]),
    ("env -S 'git push' origin", [("git", "push", "origin")]),
    ("env", [("env",)]),  # a wrapper alone is the program
    ("echo $(sudo id)", [("sudo", "id"), ("echo", "$(sudo id)")]),
    ("echo \"x $(sudo id) y\"", [("sudo", "id"), ("echo", "x $(sudo id) y")]),
    ("echo `sudo id`", [("sudo", "id"), ("echo", "`sudo id`")]),
    ("( cd a && make ) > log 2>&1", [("cd", "a"), ("make",)]),
    ("{ a; b; }", [("a",), ("b",)]),
    ("diff <(ls a) <(ls b)", [("ls", "a"), ("ls", "b"), ("diff",)]),
    ("cat < in > out 2> err", [("cat",)]),
    ("ls # ; sudo rm", [("ls",)]),
    ("bash -c 'sudo id; ls'", [("bash", "-c", "sudo id; ls"), ("sudo", "id"), ("ls",)]),
    ("sh -ec 'git push -f'", [("sh", "-ec", "git push -f"), ("git", "push", "-f")]),
    ("X=1", []),
    ("", []),
    ("a\nb", [("a",), ("b",)]),
])
def test_split(line: str, expected: list[tuple[str, ...]]) -> None:
    assert split_commands(line) == expected


@pytest.mark.parametrize(("line", "why"), [
    ("cat <<EOF", "here-documents"),
    ("$CMD --flag", "computed when the line runs"),
    ("\"$(which git)\" push", "computed when the line runs"),
    ("echo $((1 + 2))", "arithmetic"),
    ("echo 'open", "unterminated single quote"),
    ("echo \"open", "unterminated double quote"),
    ("echo `open", "unterminated backtick"),
    ("echo $(open", r"missing '\)'"),
    ("echo )", "unbalanced"),
    ("timeout --bogus 1 git", "unknown option"),
    ("f() { x; }", "function definition"),
    ("ls >", "no target"),
    ("echo \\", "backslash"),
    ("bash -c", "without a command string"),
])
def test_unparseable(line: str, why: str) -> None:
    with pytest.raises(Unparseable, match=why):
        split_commands(line)


def test_loose_tokens() -> None:
    assert loose_tokens("cat <<EOF | sudo tee '/etc/x'") == ["cat", "EOF", "sudo", "tee", "/etc/x"]


@pytest.mark.parametrize("line", ["(" * 500 + "ls" + ")" * 500, "echo " + "$(echo " * 500 + "x" + ")" * 500])
def test_deep_nesting_is_refused_not_a_crash(line: str) -> None:
    with pytest.raises(Unparseable):
        split_commands(line)


def test_nesting_within_limits_is_read() -> None:
    commands = split_commands("echo " + "$(echo " * 10 + "$(sudo x)" + ")" * 10)
    assert commands[0] == ("sudo", "x") and len(commands) == 12
