"""Split a shell command line into the simple commands it would run.

A command rule must judge every program a line starts, not just the first word: `make && git push -f`
runs git. This is a deliberately small POSIX-shell reader: quotes, backslashes, `;` `&&` `||` `|` `&`,
newlines, `( )` and `{ }` groups, `$(...)` and backtick substitutions (also inside double quotes), process
substitution, redirections (dropped from argv), `VAR=value` prefixes, the wrappers env, nohup, nice,
timeout, stdbuf and time, and `sh -c STRING` (the string is read as a line of its own). What it cannot
read with certainty (here-documents, arithmetic, a command name computed at run time, an unknown wrapper
option, unbalanced quotes) raises `Unparseable` so the engine can apply its strictest matching rule.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_SPECIAL = frozenset("'\"\\$`;&|<>()#{}!\t\n\r\x0b\x0c")
_PLAIN_RUN = re.compile(r"[^ \t\n;&|<>()'\"\\$`]+")
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash", "busybox-sh"})


class Unparseable(ValueError):
    """The line cannot be split with certainty; the message says why."""


@dataclass(frozen=True, slots=True)
class _Wrapper:
    flags: frozenset[str]  # options without a value
    valued: frozenset[str]  # options that take the next word (or `-xVALUE` / `--opt=VALUE`)
    positional: int = 0  # words the wrapper consumes before the command (timeout's DURATION)


_WRAPPERS: dict[str, _Wrapper] = {
    "env": _Wrapper(frozenset({"-i", "-", "--ignore-environment", "-0", "--null", "-v", "--debug"}),
                    frozenset({"-u", "--unset", "-C", "--chdir", "-S", "--split-string"})),
    "nohup": _Wrapper(frozenset(), frozenset()),
    "nice": _Wrapper(frozenset(), frozenset({"-n", "--adjustment"})),
    "timeout": _Wrapper(frozenset({"--foreground", "--preserve-status", "-v", "--verbose"}),
                        frozenset({"-s", "--signal", "-k", "--kill-after"}), positional=1),
    "stdbuf": _Wrapper(frozenset(), frozenset({"-i", "--input", "-o", "--output", "-e", "--error"})),
    "time": _Wrapper(frozenset({"-p", "--portability", "-v", "--verbose", "-a", "--append", "-q", "--quiet"}),
                     frozenset({"-f", "--format", "-o", "--output"})),
}


def split_commands(line: str) -> list[tuple[str, ...]]:
    """Every simple command the line runs, wrappers and assignments looked through; raises Unparseable."""
    return _split(line, depth=0)


def _split(line: str, depth: int) -> list[tuple[str, ...]]:
    if depth > 8:
        raise Unparseable("commands nested more than 8 levels deep")
    if _SPECIAL.isdisjoint(line):
        # nothing but words separated by spaces: the shell would split it exactly like this
        words = tuple(w for w in line.split(" ") if w)
        raw_commands = [(words, False)] if words else []
    else:
        reader = _Reader(line, depth)
        reader.parse_list(end=None)
        raw_commands = reader.commands
    out: list[tuple[str, ...]] = []
    for raw, dynamic_name in raw_commands:
        if dynamic_name:
            raise Unparseable("the command name is computed when the line runs")
        argv = _look_through(raw)
        if not argv:
            continue
        out.append(argv)
        inner = _shell_c_argument(argv)
        if inner is not None:
            out.extend(_split(inner, depth + 1))
    return out


def loose_tokens(line: str) -> list[str]:
    """Best-effort words of a line we could not parse: split on blanks and operators, quotes dropped."""
    cleaned = re.sub(r"[\"'`\\]", " ", line)
    return [t for t in re.split(r"[\s;&|()<>{}]+|\$\(", cleaned) if t]


class _Reader:
    def __init__(self, text: str, depth: int) -> None:
        self.s = text
        self.i = 0
        self.depth = depth
        self.nesting = 0
        self.commands: list[tuple[tuple[str, ...], bool]] = []

    def parse_list(self, end: str | None) -> None:
        """Read simple commands until `end` (a closing `)`) or the end of the text."""
        self.nesting += 1
        if self.nesting > 32:
            raise Unparseable("groups and substitutions nested more than 32 levels deep")
        try:
            self._parse_list(end)
        finally:
            self.nesting -= 1

    def _parse_list(self, end: str | None) -> None:
        s = self.s
        words: list[str] = []
        first_dynamic = False
        word: list[str] | None = None
        word_dynamic = False
        quoted = False
        skip_next = False  # the next word is a redirection target, not an argument

        def finish_word() -> None:
            nonlocal word, word_dynamic, quoted, skip_next, first_dynamic
            if word is None:
                return
            text = "".join(word)
            if skip_next:
                skip_next = False
            elif not words and not quoted and text in ("{", "}", "!"):
                pass  # grouping braces and negation are syntax, not a program
            else:
                if not words:
                    first_dynamic = word_dynamic
                words.append(text)
            word, word_dynamic, quoted = None, False, False

        def finish_command() -> None:
            nonlocal words, first_dynamic
            finish_word()
            if skip_next:
                raise Unparseable("a redirection has no target")
            if words:
                self.commands.append((tuple(words), first_dynamic))
            words, first_dynamic = [], False

        n = len(s)
        while self.i < n:
            c = s[self.i]
            if c == ")" and end == ")":
                finish_command()
                self.i += 1
                return
            if c in " \t":
                finish_word()
                self.i += 1
            elif c in "\n;":
                finish_command()
                self.i += 1
            elif c == "&":
                if s.startswith("&>", self.i):
                    finish_word()
                    self.i += 3 if s.startswith("&>>", self.i) else 2
                    skip_next = True
                else:
                    finish_command()
                    self.i += 2 if s.startswith("&&", self.i) else 1
            elif c == "|":
                finish_command()
                self.i += 2 if s.startswith(("||", "|&"), self.i) else 1
            elif c in "<>":
                if self.i + 1 < n and s[self.i + 1] == "(":
                    finish_word()
                    self.i += 2
                    self.parse_list(end=")")
                    continue
                if word is not None and not quoted and "".join(word).isdigit():
                    word, word_dynamic = None, False  # an fd number, as in 2>
                finish_word()
                if s.startswith("<<", self.i) and not s.startswith("<<<", self.i):
                    raise Unparseable("here-documents are not supported")
                op = re.match(r"<<<|>>|>\||>&|<&|<>|<|>", s[self.i:])
                assert op is not None
                self.i += len(op.group(0))
                skip_next = True
            elif c == "(":
                if word is not None:
                    raise Unparseable("'(' inside a word (a function definition?)")
                finish_command()
                self.i += 1
                self.parse_list(end=")")
            elif c == ")":
                raise Unparseable("unbalanced ')'")
            elif c == "#" and word is None:
                nl = s.find("\n", self.i)
                self.i = n if nl == -1 else nl
            else:
                if word is None:
                    word = []
                dyn, q = self._word_part(word)
                word_dynamic = word_dynamic or dyn
                quoted = quoted or q
        if end is not None:
            raise Unparseable(f"missing '{end}'")
        finish_command()

    def _word_part(self, word: list[str]) -> tuple[bool, bool]:
        """Consume one piece of a word; returns (expands at run time, was quoted)."""
        s, c = self.s, self.s[self.i]
        if c == "\\":
            if self.i + 1 >= len(s):
                raise Unparseable("a line cannot end with a backslash")
            if s[self.i + 1] != "\n":
                word.append(s[self.i + 1])
            self.i += 2
            return False, True
        if c == "'":
            close = s.find("'", self.i + 1)
            if close == -1:
                raise Unparseable("unterminated single quote")
            word.append(s[self.i + 1:close])
            self.i = close + 1
            return False, True
        if c == '"':
            return self._double_quoted(word), True
        if c == "`":
            self._backtick(word)
            return True, False
        if c == "$":
            return self._dollar(word), False
        run = _PLAIN_RUN.match(s, self.i)
        assert run is not None  # c is not special here, so the run has at least one character
        word.append(run.group(0))
        self.i = run.end()
        return False, False

    def _double_quoted(self, word: list[str]) -> bool:
        s = self.s
        self.i += 1
        dynamic = False
        while self.i < len(s):
            c = s[self.i]
            if c == '"':
                self.i += 1
                return dynamic
            if c == "\\" and self.i + 1 < len(s) and s[self.i + 1] in '$`"\\\n':
                if s[self.i + 1] != "\n":
                    word.append(s[self.i + 1])
                self.i += 2
            elif c == "`":
                self._backtick(word)
                dynamic = True
            elif c == "$":
                dynamic = self._dollar(word) or dynamic
            else:
                word.append(c)
                self.i += 1
        raise Unparseable("unterminated double quote")

    def _dollar(self, word: list[str]) -> bool:
        s, start = self.s, self.i
        if s.startswith("$((", start):
            raise Unparseable("arithmetic expansion is not supported")
        if s.startswith("$(", start):
            self.i += 2
            self.parse_list(end=")")
            word.append(s[start:self.i])
            return True
        if s.startswith("${", start):
            close = s.find("}", start)
            if close == -1:
                raise Unparseable("unterminated '${'")
            inner = s[start + 2:close]
            if "$(" in inner or "`" in inner:
                raise Unparseable("a command inside '${...}' is not supported")
            word.append(s[start:close + 1])
            self.i = close + 1
            return True
        m = re.match(r"\$(?:[A-Za-z_][A-Za-z0-9_]*|[0-9@*#?$!-])", s[start:])
        if m:
            word.append(m.group(0))
            self.i += len(m.group(0))
            return True
        word.append("$")
        self.i += 1
        return False

    def _backtick(self, word: list[str]) -> None:
        s, start = self.s, self.i
        j = start + 1
        while j < len(s) and s[j] != "`":
            j += 2 if s[j] == "\\" else 1
        if j >= len(s):
            raise Unparseable("unterminated backtick")
        inner = re.sub(r"\\([`$\\])", r"\1", s[start + 1:j])
        for argv in _split(inner, self.depth + 1):
            self.commands.append((argv, False))
        word.append(s[start:j + 1])
        self.i = j + 1


def _look_through(argv: tuple[str, ...]) -> tuple[str, ...]:
    """Drop `VAR=value` prefixes and known wrappers until the program that really runs."""
    i, n = 0, len(argv)
    while True:
        while i < n and _ASSIGNMENT.match(argv[i]):
            i += 1
        if i >= n:
            return ()
        wrapper = _WRAPPERS.get(_basename(argv[i]))
        if wrapper is None:
            return argv[i:]
        j, split = _skip_wrapper_options(argv, i, wrapper)
        if split is not None:
            return _look_through((*split, *argv[j:]))
        if j >= n:
            return argv[i:]  # the wrapper alone is the program
        i = j


def _skip_wrapper_options(argv: tuple[str, ...], i: int, wrapper: _Wrapper) -> tuple[int, list[str] | None]:
    name = _basename(argv[i])
    j, n = i + 1, len(argv)
    positional = wrapper.positional
    while j < n:
        word = argv[j]
        if word == "--":
            j += 1
            break
        if name == "env" and _ASSIGNMENT.match(word):
            j += 1
            continue
        if not word.startswith("-") or (word == "-" and name != "env"):
            break
        if name == "nice" and re.fullmatch(r"-\d+", word):
            j += 1
            continue
        opt, eq, value = word.partition("=")
        if word in wrapper.flags:
            j += 1
        elif opt in wrapper.valued:
            if opt in ("-S", "--split-string"):
                text = value if eq else (argv[j + 1] if j + 1 < n else None)
                if text is None:
                    raise Unparseable("env -S needs a command string")
                return j + (1 if eq else 2), _shlex(text)
            j += 1 if eq else 2
        elif word[:2] in wrapper.valued and len(word) > 2 and not word.startswith("--"):
            if word[:2] == "-S":
                return j + 1, _shlex(word[2:])
            j += 1  # -n10, -oL
        else:
            raise Unparseable(f"unknown option {word!r} for {name}")
    while positional and j < n:
        j += 1
        positional -= 1
    return j, None


def _basename(path: str) -> str:
    return path[path.rfind("/") + 1:]


def _shlex(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise Unparseable(f"cannot split {text!r}: {exc}") from None


def _shell_c_argument(argv: tuple[str, ...]) -> str | None:
    """The command string of `sh -c STRING ...`, which the shell will run as a line of its own."""
    if _basename(argv[0]) not in _SHELLS:
        return None
    for k, word in enumerate(argv[1:], start=1):
        if not word.startswith("-") or word == "--":
            return None
        if "c" in word[1:] and not word.startswith("--"):
            if k + 1 >= len(argv):
                raise Unparseable(f"{argv[0]} -c without a command string")
            return argv[k + 1]
    return None
