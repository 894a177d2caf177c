from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guard.policy import shell
from guard.policy.shell import MANY, ONE, Unparseable, loose_tokens, parse_line, split_commands

from .snapshot import codex_snapshot


@pytest.mark.parametrize(("line", "expected"), [
    ("git push origin main", [("git", "push", "origin", "main")]),
    ("make && git push -f", [("make",), ("git", "push", "-f")]),
    ("a || b; c | d & e", [("a",), ("b",), ("c",), ("d",), ("e",)]),
    ("echo 'a && b' \"c; d\"", [("echo", "a && b", "c; d")]),
    ("echo a\\ b", [("echo", "a b")]),
    ("FOO=1 BAR=2 git push", [("FOO=1", "BAR=2", "git", "push")]),  # assignments are read by _tools
    ("echo $(sudo id)", [("sudo", "id"), ("echo", "$(sudo id)")]),
    ("echo \"x $(sudo id) y\"", [("sudo", "id"), ("echo", "x $(sudo id) y")]),
    ("echo `sudo id`", [("sudo", "id"), ("echo", "`sudo id`")]),
    ("( cd a && make ) > log 2>&1", [("cd", "a"), ("make",)]),
    ("{ a; b; }", [("a",), ("b",)]),
    ("diff <(ls a) <(ls b)", [("ls", "a"), ("ls", "b"), ("diff",)]),
    ("cat < in > out 2> err", [("cat",)]),
    ("ls # ; sudo rm", [("ls",)]),
    ("X=1", [("X=1",)]),
    ("", []),
    ("a\nb", [("a",), ("b",)]),
    # syntax the reader knows
    ("if git diff --quiet; then git push; else make; fi", [("git", "diff", "--quiet"), ("git", "push"), ("make",)]),
    ("for f in a b; do git add \"$f\"; done", [("git", "add", "$f")]),
    ("while read -r l; do echo \"$l\"; done < x", [("read", "-r", "l"), ("echo", "$l")]),
    ("case $x in a|b) git push ;; *) make ;; esac; ls", [("git", "push"), ("make",), ("ls",)]),
    ("[[ -n $x && $y < 3 ]] && git push", [("git", "push")]),
    ("(( n > 1 )) && echo $((n + 1))", [("echo", "$((n + 1))")]),
    ("cat <<EOF | sudo tee x\nline $(git push -f)\nEOF\nls", [("cat",), ("sudo", "tee", "x"), ("git", "push", "-f"), ("ls",)]),
    ("cat <<'EOF'\n$(git push -f)\nEOF", [("cat",)]),  # a quoted delimiter: the body is data
    ("f() { git push \"$@\"; }", []),  # a definition runs nothing
    ("f() { git push \"$@\"; }; f -f", [("f", "-f"), ("git", "push", "-f")]),  # its use runs the body
    ("function g { sudo \"$1\"; }\ng id", [("g", "id"), ("sudo", "id")]),
    ("alias gp='git push'\ngp -f", [("alias", "gp=git push"), ("gp", "-f"), ("git", "push", "-f")]),
    ("arr=(a 'b c' $(git push -f)); ls", [("git", "push", "-f"), ("arr=(a 'b c' $(git push -f))",), ("ls",)]),
    ("declare -a V=([0]=\"5\" [1]=\"2\")\npytest", [("declare", "-a", 'V=([0]="5" [1]="2")'), ("pytest",)]),
])
def test_split(line: str, expected: list[tuple[str, ...]]) -> None:
    assert split_commands(line) == expected


@pytest.mark.parametrize(("line", "words"), [
    ("git push $F", ("git", "push", MANY)),  # unquoted: zero or more words
    ("git push \"$F\"", ("git", "push", ONE)),  # quoted: exactly one
    ("git push \"$@\"", ("git", "push", MANY)),
    ("git push origin *", ("git", "push", "origin", MANY)),  # a file named --force would do
    ("git push origin {main,x}", ("git", "push", "origin", MANY)),
    ("git push origin '*'", ("git", "push", "origin", "*")),
    ("$G push", (MANY, "push")),
    ("git push $'\\x2df'", ("git", "push", ONE)),
])
def test_words_known_only_at_run_time_are_wildcards(line: str, words: tuple[str, ...]) -> None:
    assert parse_line(line).commands[-1].words == words


@pytest.mark.parametrize(("line", "why"), [
    ("echo 'open", "unterminated single quote"),
    ("echo \"open", "unterminated double quote"),
    ("echo `open", "unterminated backtick"),
    ("echo $(open", r"missing '\)'"),
    ("echo )", "unbalanced"),
    ("ls >", "no target"),
    ("echo \\", "backslash"),
    ("echo $(( $(id) ))", "arithmetic"),
    ("f() ( x )", "body other than"),
])
def test_unparseable(line: str, why: str) -> None:
    with pytest.raises(Unparseable, match=why):
        split_commands(line)


def test_reading_stops_at_the_statement_it_cannot_read_and_keeps_what_came_before() -> None:
    parsed = parse_line("make\ngit status; echo 'open\ngit push -f\n")
    assert [c.argv for c in parsed.commands] == [("make",), ("git", "status")]
    assert parsed.unparsed.strip() == "echo 'open\ngit push -f" and "single quote" in parsed.problem


def test_loose_tokens() -> None:
    assert loose_tokens("cat <<EOF | sudo tee '/etc/x'") == ["cat", "EOF", "sudo", "tee", "/etc/x"]


@pytest.mark.parametrize("line", ["( " * 500 + "ls" + " )" * 500, "echo " + "$(echo " * 500 + "x" + ")" * 500])
def test_deep_nesting_is_refused_not_a_crash(line: str) -> None:
    with pytest.raises(Unparseable):
        split_commands(line)


def test_nesting_within_limits_is_read() -> None:
    commands = split_commands("echo " + "$(echo " * 10 + "$(sudo x)" + ")" * 10)
    assert commands[0] == ("sudo", "x") and len(commands) == 12


def test_a_shell_snapshot_is_read_whole_and_its_definitions_do_not_run() -> None:
    parsed = parse_line(codex_snapshot("pytest -q"))
    assert parsed.unparsed == "", parsed.problem
    argv = [c.argv for c in parsed.commands]
    assert argv[-1] == ("pytest", "-q")
    assert not any(a[:2] == ("git", "push") for a in argv)  # only defined (gp_0, alias gp), never used


def test_resuming_a_known_preamble_reads_the_same_as_from_the_start() -> None:
    shell._RESUME.clear()  # an empty resume memo
    first = shell.parse_line(codex_snapshot("gp -f"))
    again = shell.parse_line(codex_snapshot("gp -f"))  # resumes from the memo of the first
    other = shell.parse_line(codex_snapshot("gp_3 origin"))
    shell._RESUME.clear()
    fresh = shell.parse_line(codex_snapshot("gp_3 origin"))
    assert first == again and other == fresh
    assert other.commands[-1].argv == ("git", "push", "origin")


_STATEMENTS = [
    "git status", "gp_x -f", "f_{n} () {{\n    git push \"$@\"\n}}", "alias a{n}='git push'", "a{n} origin",
    "cat <<EOF\n$(id)\nEOF", "if true; then make; fi", "case $x in a) ls ;; esac", "x=(1 2 $(date))",
    "for i in 1 2; do echo $i; done", "echo 'a;b' \"c $(git log)\"", "[[ -n $x ]] && true", "(( n++ ))",
    "echo 'unterminated", "{{ git push; }}", "f_{n} --force", "# comment {n}", "export V{n}=\"x y\"",
]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(_STATEMENTS), min_size=1, max_size=40), st.lists(st.sampled_from(_STATEMENTS),
       min_size=1, max_size=3), st.lists(st.sampled_from(_STATEMENTS), min_size=1, max_size=3))
def test_resuming_never_changes_what_is_read(preamble: list[str], tail_a: list[str], tail_b: list[str]) -> None:
    """The resume memo is a cache of a security decision's input: with it or without it, the same text
    reads the same (a long preamble, then two different endings, against a fresh read of each)."""
    body = "\n".join(s.format(n=i) for i, s in enumerate(preamble))
    pad = "\n".join(f"export PAD{i}=\"{'x' * 40}\"" for i in range(60))  # long enough to be remembered
    first = f"{pad}\n{body}\n" + "\n".join(s.format(n=99) for s in tail_a) + "\n"
    second = f"{pad}\n{body}\n" + "\n".join(s.format(n=98) for s in tail_b) + "\n"
    shell._RESUME.clear()
    fresh = shell.parse_line(second)
    shell._RESUME.clear()
    shell.parse_line(first)  # leaves boundaries of the shared beginning in the memo
    assert shell.parse_line(second) == fresh
