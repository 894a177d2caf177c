"""Read a shell line or script into the simple commands it can run.

A command rule must judge every program a line starts, not just the first word: `make && git push -f`
runs git. This is a deliberately small POSIX/bash reader, tolerant enough for the scripts agents really
send (Codex wraps each command in a shell snapshot of thousands of words): quotes, backslashes, `;` `&&`
`||` `|` `&`, newlines, `( )` and `{ }` groups, `if`/`while`/`for`/`case` syntax, `[[ ]]`, `(( ))`,
functions (their bodies are judged where they are called), aliases (judged where they are used),
here-documents (substitutions in an unquoted body are commands too), `$(...)`, backticks and `$((...))`
(also inside double quotes), process substitution, redirections (dropped from argv) and comments.

Words whose value is known only when the line runs are kept as text in `argv` and become wildcards in
`words`: `ONE` (exactly one word: `"$X"`) or `MANY` (zero or more: `$X`, `"$@"`, an unquoted glob or brace
expansion, which the shell may turn into `--force`). The program name itself may be one.

What it cannot read with certainty (an unterminated quote, a construct it does not know) never fails the
whole line: the commands read before that statement are kept and the rest of the text is returned as
`unparsed`, which the engine searches word by word. Nothing here raises on agent input except the
compatibility wrapper `split_commands`.
"""

from __future__ import annotations

import re
import shlex
import threading
from dataclasses import dataclass, field

ONE = "\x00?"  # one word known only at run time (no real argv word holds a NUL)
MANY = "\x00*"  # zero or more words known only at run time
WILDCARDS = (ONE, MANY)

_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[[^]]*\])?\+?=")
_SPECIAL = frozenset("'\"\\$`;&|<>()#{}!*?[\t\n\r\x0b\x0c")
_PLAIN_RUN = re.compile(r"[^ \t\n;&|<>()'\"\\$`]+")
_GLOB = re.compile(r"[*?]|\[.*\]|\{[^{}]*(,|\.\.)[^{}]*\}")  # pathname and brace expansion
_SKIP_WORDS = frozenset({"!", "then", "else", "elif", "while", "until"})
_OPEN_WORDS = frozenset({"{", "if"})
_CLOSE_WORDS = frozenset({"}", "fi", "done"})
_DISCARD_WORDS = frozenset({"for", "select"})  # `for x in a b c`: the words are data, not a command
MAX_DEPTH = 8
MAX_NESTING = 32
_RUNS_ITS_ARGUMENTS = frozenset({"trap", "eval", "command", "builtin", "exec", "time", "nohup", "xargs"})
RESUME_MIN = 2048  # texts this long remember where their last statements began (see _RESUME)
RESUME_SLOTS = 12
_SAVED_PER_TEXT = 3  # the last boundaries: the text after the first of them is the part that changes



class Unparseable(ValueError):
    """The text cannot be read with certainty; the message says why."""


@dataclass(frozen=True, slots=True)
class Command:
    """One simple command: `argv` as written (expansions kept as text), `words` as matching sees it."""

    argv: tuple[str, ...]
    words: tuple[str, ...]

    @property
    def dynamic(self) -> bool:
        return any(w in WILDCARDS for w in self.words)


@dataclass(frozen=True, slots=True)
class ParsedLine:
    """Every simple command read with certainty, and the text from where reading stopped (if any)."""

    commands: tuple[Command, ...]
    unparsed: str = ""
    problem: str = ""


# Agents send the same long preamble before each command (Codex's shell snapshot): what the reader knew at
# a statement boundary of a long text, keyed by the text up to there, lets the next text with the same
# beginning resume there instead of reading thousands of words again. The state at a top-level boundary is
# a function of the text before it, so resuming gives the same result as reading from the start.
_Saved = tuple[int, tuple[Command, ...], tuple[tuple[str, tuple[Command, ...]], ...]]
_RESUME: dict[tuple[int, str], _Saved] = {}
_RESUME_LOCK = threading.Lock()  # the supervisor decides from more than one thread


@dataclass
class _Block:
    """Where the reader is: a function body being read (its commands are kept apart)."""

    name: str
    depth: int
    outer: list[Command]


@dataclass
class _State:
    functions: dict[str, list[Command]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)


def parse_line(line: str) -> ParsedLine:
    """Read `line`; never raises. Function and alias uses are expanded into the commands they run."""
    return _parse(line, 0)


def _parse(line: str, depth: int) -> ParsedLine:
    if depth > MAX_DEPTH:
        return ParsedLine((), line, f"commands nested more than {MAX_DEPTH} levels deep")
    if _SPECIAL.isdisjoint(line):
        # nothing but words separated by spaces: the shell would split it exactly like this
        words = tuple(w for w in line.split(" ") if w)
        return ParsedLine((Command(words, words),) if words else ())
    reader = _Reader(line, depth)
    if len(line) >= RESUME_MIN:
        reader.track = True
        with _RESUME_LOCK:
            best = max((key for key in _RESUME if key[0] == depth and line.startswith(key[1])),
                       key=lambda key: len(key[1]), default=None)
            saved_state = _RESUME.pop(best, None) if best is not None else None
            if best is not None and saved_state is not None:
                _RESUME[best] = saved_state  # most recently used last: eviction takes the oldest
        if saved_state is not None:
            reader.resume(saved_state)
    problem = ""
    unparsed = ""
    try:
        reader.parse_list(end=None)
        if reader.heredocs:
            reader.read_heredoc_bodies()
    except Unparseable as exc:
        problem = str(exc)
        unparsed = line[reader.statement_start:]
        del reader.top[reader.statement_count:]
    for saved in reader.saved if not unparsed else ():
        if not line[saved[0]:].strip():
            continue  # the end of this text: no other text resumes there
        key = (depth, line[:saved[0]])
        with _RESUME_LOCK:
            if key not in _RESUME:
                while len(_RESUME) >= RESUME_SLOTS:
                    _RESUME.pop(next(iter(_RESUME)), None)
                _RESUME[key] = saved
    commands = _expand_uses(reader.top, reader.state, depth)
    return ParsedLine(tuple(commands), unparsed, problem)


def _expand_uses(commands: list[Command], state: _State, depth: int) -> list[Command]:
    """Add what each use of a defined function or alias runs (function bodies are not run where they
    are defined; a function defined anywhere in the script counts, which is the strict reading)."""
    for cmd in commands:
        if cmd.argv and cmd.argv[0] == "alias":
            for arg in cmd.argv[1:]:
                name, eq, value = arg.partition("=")
                if eq:
                    state.aliases[name] = value
    if not state.functions and not state.aliases:
        return commands
    out: list[Command] = []
    seen: set[str] = set()

    def add(cmd: Command, level: int) -> None:
        out.append(cmd)
        name = cmd.words[0] if cmd.words else ""
        if level > MAX_DEPTH or name in seen:
            return
        if name in _RUNS_ITS_ARGUMENTS and not cmd.dynamic:
            # `trap 'gp -f' EXIT`, `eval gp`, `command gp`: a defined name used through another command
            text = cmd.argv[1] if name == "trap" and len(cmd.argv) > 1 else " ".join(
                a for a in cmd.argv[1:] if not a.startswith("-"))
            for inner in _parse(text, depth + 1).commands:
                if inner.words and (inner.words[0] in state.functions or inner.words[0] in state.aliases):
                    add(inner, level + 1)
        body = state.functions.get(name)
        if body is not None:
            seen.add(name)
            for inner in body:
                add(_bind(inner, cmd), level + 1)
            seen.discard(name)
        value = state.aliases.get(name)
        if value is not None:
            seen.add(name)
            rest = " ".join(shlex.quote(a) if w not in WILDCARDS else '"$@"'
                            for a, w in zip(cmd.argv[1:], cmd.words[1:], strict=True))
            expanded = _parse(f"{value} {rest}", depth + 1)
            for inner in expanded.commands:
                add(inner, level + 1)
            if expanded.unparsed:
                out.append(Command((expanded.unparsed,), (MANY,)))
            seen.discard(name)

    for cmd in commands:
        add(cmd, 0)
    return out


_POSITIONAL = re.compile(r"\$(?:\{([0-9]+)\}|([0-9]))")


def _bind(inner: Command, call: Command) -> Command:
    """A function body's command with the call's arguments in place of "$@" and "$1".."$9"."""
    if not inner.dynamic:
        return inner
    argv: list[str] = []
    words: list[str] = []
    for text, word in zip(inner.argv, inner.words, strict=True):
        if word == MANY and text in ("$@", "${@}", "$*", "${*}"):
            argv.extend(call.argv[1:])
            words.extend(call.words[1:])
            continue
        m = _POSITIONAL.fullmatch(text)
        if m and word in WILDCARDS:
            k = int(m.group(1) or m.group(2))
            if k == 0:
                argv.append(text)
                words.append(ONE)
            elif k < len(call.words):
                argv.append(call.argv[k])
                words.append(call.words[k])
            elif word == ONE:
                argv.append("")
                words.append("")
            continue  # an unquoted missing argument is no word at all
        argv.append(text)
        words.append(word)
    return Command(tuple(argv), tuple(words))


def split_commands(line: str) -> list[tuple[str, ...]]:
    """Compatibility view: the argv of every simple command, raising Unparseable where `parse_line`
    would leave text unread or a program name is computed when the line runs."""
    parsed = parse_line(line)
    if parsed.unparsed:
        raise Unparseable(parsed.problem)
    out = []
    for cmd in parsed.commands:
        if cmd.words and cmd.words[0] in WILDCARDS:
            raise Unparseable("the command name is computed when the line runs")
        out.append(cmd.argv)
    return out


def loose_tokens(line: str) -> list[str]:
    """Best-effort words of text we could not read: split on blanks and operators, quotes dropped."""
    cleaned = re.sub(r"[\"'`\\]", " ", line)
    return [t for t in re.split(r"[\s;&|()<>{}]+|\$\(", cleaned) if t]


class _Reader:
    def __init__(self, text: str, depth: int, state: _State | None = None) -> None:
        self.s = text
        self.i = 0
        self.depth = depth
        self.nesting = 0
        self.block = 0  # open `{`, `if`, `do` at any level of this reader
        self.state = state or _State()
        self.top: list[Command] = []
        self.commands = self.top  # where finished commands go (a function body while one is read)
        self.functions: list[_Block] = []
        self.heredocs: list[tuple[str, bool, bool]] = []  # (delimiter, strip tabs, quoted)
        self.statement_start = 0
        self.statement_count = 0
        self.track = False
        self.saved: list[_Saved] = []

    def resume(self, saved: _Saved) -> None:
        self.i, top, functions = saved
        self.top.extend(top)
        self.state.functions.update((name, list(body)) for name, body in functions)
        self.statement_start, self.statement_count = self.i, len(self.top)

    # -- lists ------------------------------------------------------------------------------------------

    def parse_list(self, end: str | None) -> None:
        """Read simple commands until `end` (`)` or the end of a `case` item) or the end of the text."""
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise Unparseable(f"groups and substitutions nested more than {MAX_NESTING} levels deep")
        try:
            self._parse_list(end)
        finally:
            self.nesting -= 1

    def _at_statement_boundary(self) -> None:
        if self.nesting == 1 and self.block == 0 and not self.functions:
            self.statement_start = self.i
            self.statement_count = len(self.top)
            if self.track and self.i >= len(self.s) // 2 and not self.heredocs:
                if self.saved and self.s[self.saved[-1][0]:self.i].strip() == "":
                    self.saved.pop()  # nothing but blanks since the last one
                self.saved.append((self.i, tuple(self.top),
                                   tuple((name, tuple(body)) for name, body in self.state.functions.items())))
                del self.saved[:-_SAVED_PER_TEXT]

    def _parse_list(self, end: str | None) -> None:
        s = self.s
        words: list[str] = []
        kinds: list[str] = []
        discard = False
        in_test = False  # inside [[ ... ]]: operators are words
        word: list[str] | None = None
        kind = ""  # "" static, ONE, MANY
        quoted = False
        skip_next = False  # the next word is a redirection target, not an argument
        fn_name: str | None = None  # a `name ()` or `function name` waiting for its body

        def finish_word() -> None:
            nonlocal word, kind, quoted, skip_next, discard, in_test, fn_name
            if word is None:
                return
            text = "".join(word)
            if skip_next:
                skip_next = False
            elif not words and not quoted and kind == "" and not discard and self._keyword(text):
                if text in _DISCARD_WORDS:
                    discard = True
                elif text == "[[":
                    in_test = discard = True
                elif text == "function":
                    fn_name = ""
                elif fn_name == "" and text:
                    fn_name = text
            elif fn_name == "":
                fn_name = text
            elif in_test and text == "]]" and not quoted:
                in_test = False
            else:
                if kind and _ASSIGNMENT.match(text) and all(_ASSIGNMENT.match(w) for w in words):
                    kind = ""  # `FOO=$X git push`: an assignment, whatever its value, not the program
                words.append(text)
                kinds.append(kind or text)
            word, kind, quoted = None, "", False

        def finish_command() -> None:
            nonlocal words, kinds, discard, in_test
            finish_word()
            if skip_next:
                raise Unparseable("a redirection has no target")
            if in_test:
                raise Unparseable("'[[' without ']]'")
            if fn_name is not None:
                raise Unparseable("a function definition without a body")
            if words and not discard:
                self.commands.append(Command(tuple(words), tuple(kinds)))
            words, kinds, discard = [], [], False

        n = len(s)
        while self.i < n:
            c = s[self.i]
            if fn_name and word is None and not words and c in " \t\n":
                self.i += 1
                continue
            if fn_name and word is None and not words:
                # the body of `name ()`: a `{ ... }` group whose commands are kept apart until called
                if c != "{":
                    raise Unparseable(f"function {fn_name!r} has a body other than '{{ ... }}'")
                self.functions.append(_Block(fn_name, self.block, self.commands))
                self.commands = []
                self.block += 1
                self.i += 1
                fn_name = None
                continue
            if c == ")" and end == ")" and not in_test:
                finish_command()
                self.i += 1
                return
            if in_test and c in "<>()&|":
                word = (word or []) + [c]
                self.i += 1
                continue
            if c in " \t":
                finish_word()
                self.i += 1
            elif c == "\n":
                finish_command()
                self.i += 1
                if self.heredocs:
                    self.read_heredoc_bodies()
                self._at_statement_boundary()
            elif c == ";":
                if end == "case" and s.startswith((";;", ";&"), self.i):
                    finish_command()
                    self.i += 3 if s.startswith(";;&", self.i) else 2
                    return
                finish_command()
                self.i += 1
                self._at_statement_boundary()
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
                    word, kind = None, ""  # an fd number, as in 2>
                finish_word()
                if s.startswith("<<", self.i) and not s.startswith("<<<", self.i):
                    self._heredoc_operator()
                    continue
                op = re.match(r"<<<|>>|>\||>&|<&|<>|<|>", s[self.i:])
                assert op is not None
                self.i += len(op.group(0))
                skip_next = True
            elif c == "(":
                if s.startswith("((", self.i) and word is None and not words:
                    self._arithmetic(self.i + 2)  # an arithmetic command: no program runs
                    discard = True
                    continue
                if word is not None and "".join(word).endswith("="):
                    self._array(word)  # `arr=(a b c)`: data, though a substitution inside runs
                    kind = MANY
                    continue
                name = "".join(word) if word is not None else (words[-1] if len(words) == 1 else None)
                if name is not None and not quoted and re.fullmatch(r"[^\s()<>;&|$`'\"]+", name) \
                        and len(words) <= 1 and (word is None) != (not words) \
                        and re.match(r"\(\s*\)", s[self.i:]):
                    # `name () { ... }`: a function definition
                    word, words, kinds = None, [], []
                    self.i = s.index(")", self.i) + 1
                    fn_name = name
                    continue
                if word is not None:
                    raise Unparseable("'(' inside a word")
                finish_command()
                self.i += 1
                self.parse_list(end=")")
            elif c == ")":
                raise Unparseable("unbalanced ')'")
            elif c == "#" and word is None:
                nl = s.find("\n", self.i)
                self.i = n if nl == -1 else nl
            elif word is None and not words and not discard and end == "case" \
                    and re.match(r"esac(?=[\s;&|)]|$)", s[self.i:]):
                self.i += 4
                self.case_closed = True
                return
            else:
                if word is None:
                    word = []
                k, q = self._word_part(word)
                quoted = quoted or q
                if k == MANY or (k == ONE and kind == ""):
                    kind = k
            if fn_name is None and self.functions and self.block == self.functions[-1].depth:
                self._close_function()
            if not words and word is None and not discard and self._pending_case:
                self._pending_case = False
                self._case()
        if end is not None:
            raise Unparseable(f"missing '{end}'")
        finish_command()
        if self.functions and self.block == self.functions[-1].depth:
            self._close_function()

    _pending_case = False
    case_closed = False

    def _keyword(self, text: str) -> bool:
        """A reserved word at command position: adjust the block depth; True when it is syntax."""
        if text in _OPEN_WORDS:
            self.block += 1
        elif text in _CLOSE_WORDS:
            self.block -= 1
            if self.block < 0:
                raise Unparseable(f"unbalanced {text!r}")
        elif text == "do":
            self.block += 1
        elif text == "case":
            self._pending_case = True
        elif text not in _SKIP_WORDS and text not in _DISCARD_WORDS and text not in ("[[", "function"):
            return False
        return True

    def _close_function(self) -> None:
        block = self.functions.pop()
        self.state.functions.setdefault(block.name, []).extend(self.commands)
        self.commands = block.outer

    # -- case ---------------------------------------------------------------------------------------

    def _case(self) -> None:
        """After `case`: the subject word, `in`, then `pattern) list ;;` items until `esac`."""
        s = self.s
        self._skip_blank()
        self._read_word()  # the subject (its substitutions are recorded as commands)
        self._skip_blank(newlines=True)
        if not s.startswith("in", self.i):
            raise Unparseable("'case' without 'in'")
        self.i += 2
        while True:
            self._skip_blank(newlines=True)
            if re.match(r"esac(?=[\s;&|)]|$)", s[self.i:]):
                self.i += 4
                return
            if self.i >= len(s):
                raise Unparseable("'case' without 'esac'")
            if s[self.i] == "(":
                self.i += 1
            while True:  # patterns separated by `|`, ended by `)`
                self._skip_blank()
                self._read_word(stop=")|")
                self._skip_blank()
                if self.i >= len(s):
                    raise Unparseable("'case' pattern without ')'")
                if s[self.i] == "|":
                    self.i += 1
                    continue
                if s[self.i] != ")":
                    raise Unparseable("'case' pattern without ')'")
                self.i += 1
                break
            self.case_closed = False
            self.parse_list(end="case")
            if self.case_closed:
                return

    def _skip_blank(self, newlines: bool = False) -> None:
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c in " \t" or (newlines and c in "\n;"):
                self.i += 1
            elif newlines and c == "#":
                nl = s.find("\n", self.i)
                self.i = len(s) if nl == -1 else nl
            else:
                return

    def _read_word(self, stop: str = "") -> None:
        s = self.s
        sink: list[str] = []
        while self.i < len(s) and s[self.i] not in " \t\n;&<>()" + stop and s[self.i] != "|":
            self._word_part(sink)

    # -- here-documents -------------------------------------------------------------------------------

    def _heredoc_operator(self) -> None:
        s = self.s
        strip = s.startswith("<<-", self.i)
        self.i += 3 if strip else 2
        self._skip_blank()
        start = self.i
        while self.i < len(s) and s[self.i] not in " \t\n;&|<>()":
            if s[self.i] in "'\"":
                close = s.find(s[self.i], self.i + 1)
                if close == -1:
                    raise Unparseable("unterminated quote in a here-document delimiter")
                self.i = close + 1
            else:
                self.i += 2 if s[self.i] == "\\" else 1
        raw = s[start:self.i]
        if not raw:
            raise Unparseable("a here-document without a delimiter")
        quoted = any(q in raw for q in "'\"\\")
        delimiter = re.sub(r"['\"\\]", "", raw)
        self.heredocs.append((delimiter, strip, quoted))

    def read_heredoc_bodies(self) -> None:
        """The bodies of the here-documents opened on the line just ended; an unquoted body's
        substitutions run, so they are read as commands."""
        s = self.s
        pending, self.heredocs = self.heredocs, []
        for delimiter, strip, quoted in pending:
            start = self.i
            while self.i < len(s):
                nl = s.find("\n", self.i)
                line_end = len(s) if nl == -1 else nl
                text = s[self.i:line_end]
                self.i = min(len(s), line_end + 1)
                if (text.lstrip("\t") if strip else text) == delimiter:
                    body = s[start:self.i - len(text) - 1]
                    break
            else:
                body = s[start:]  # bash reads to the end of the text with a warning
            if not quoted and ("$" in body or "`" in body):
                sub = _Reader(body, self.depth, self.state)
                sub.commands = self.commands
                sub.nesting = self.nesting
                sub._expansions_only()

    def _expansions_only(self) -> None:
        """Walk text that is data except for `$...` and backtick substitutions (a here-document body)."""
        s = self.s
        sink: list[str] = []
        while self.i < len(s):
            c = s[self.i]
            if c == "\\":
                self.i += 2
            elif c == "`":
                self._backtick(sink)
            elif c == "$":
                self._dollar(sink, quoted=True)
            else:
                self.i += 1

    # -- words ------------------------------------------------------------------------------------------

    def _word_part(self, word: list[str]) -> tuple[str, bool]:
        """Consume one piece of a word; returns (its kind: "" static, ONE or MANY; was it quoted)."""
        s, c = self.s, self.s[self.i]
        if c == "\\":
            if self.i + 1 >= len(s):
                raise Unparseable("a line cannot end with a backslash")
            if s[self.i + 1] != "\n":
                word.append(s[self.i + 1])
            self.i += 2
            return "", True
        if c == "'":
            close = s.find("'", self.i + 1)
            if close == -1:
                raise Unparseable("unterminated single quote")
            word.append(s[self.i + 1:close])
            self.i = close + 1
            return "", True
        if c == '"':
            return self._double_quoted(word), True
        if c == "`":
            self._backtick(word)
            return MANY, False
        if c == "$":
            if s.startswith("$'", self.i):
                return self._ansi_c(word), True
            return MANY if self._dollar(word, quoted=False) else "", False
        run = _PLAIN_RUN.match(s, self.i)
        if run is None:  # a character that is special only elsewhere (e.g. '(' inside [[ ]])
            word.append(c)
            self.i += 1
            return "", False
        word.append(run.group(0))
        self.i = run.end()
        return (MANY if _GLOB.search(run.group(0)) else ""), False

    def _array(self, word: list[str]) -> None:
        """The elements of an array assignment, up to its `)`; their substitutions are commands."""
        s, start = self.s, self.i
        self.i += 1
        sink: list[str] = []
        while True:
            self._skip_blank(newlines=True)
            if self.i >= len(s):
                raise Unparseable("an array assignment without ')'")
            if s[self.i] == ")":
                self.i += 1
                break
            if s[self.i] in ";&|<>(":
                raise Unparseable(f"unexpected {s[self.i]!r} in an array assignment")
            while self.i < len(s) and s[self.i] not in " \t\n;&|<>()":
                self._word_part(sink)
        word.append(s[start:self.i])

    def _ansi_c(self, word: list[str]) -> str:
        s = self.s
        j = self.i + 2
        while j < len(s) and s[j] != "'":
            j += 2 if s[j] == "\\" else 1
        if j >= len(s):
            raise Unparseable("unterminated $'...' quote")
        text = s[self.i + 2:j]
        word.append(text)
        self.i = j + 1
        return ONE if "\\" in text else ""  # escapes could spell any word: its value is not read here

    def _double_quoted(self, word: list[str]) -> str:
        s = self.s
        self.i += 1
        kind = ""
        while self.i < len(s):
            c = s[self.i]
            if c == '"':
                self.i += 1
                return kind
            if c == "\\" and self.i + 1 < len(s) and s[self.i + 1] in '$`"\\\n':
                if s[self.i + 1] != "\n":
                    word.append(s[self.i + 1])
                self.i += 2
            elif c == "`":
                self._backtick(word)
                kind = kind or ONE
            elif c == "$":
                start = self.i
                if self._dollar(word, quoted=True):
                    expansion = s[start:self.i]
                    # "$@" is as many words as there are arguments
                    many = expansion in ("$@", "${@}") or expansion.endswith("[@]}")
                    kind = MANY if many else (kind or ONE)
            else:
                word.append(c)
                self.i += 1
        raise Unparseable("unterminated double quote")

    def _dollar(self, word: list[str], *, quoted: bool) -> bool:
        """Consume a `$` expansion; True when it expands at run time."""
        s, start = self.s, self.i
        if s.startswith("$((", start):
            self._arithmetic(start + 3)
            word.append(s[start:self.i])
            return True
        if s.startswith("$(", start):
            self.i += 2
            self.parse_list(end=")")
            word.append(s[start:self.i])
            return True
        if s.startswith("${", start):
            depth, j = 0, start + 2
            while j < len(s):
                if s.startswith("${", j):
                    depth += 1
                    j += 2
                    continue
                if s[j] == "\\":
                    j += 2
                    continue
                if s[j] == "}":
                    if depth == 0:
                        break
                    depth -= 1
                j += 1
            if j >= len(s):
                raise Unparseable("unterminated '${'")
            inner = s[start + 2:j]
            if "$(" in inner or "`" in inner:
                raise Unparseable("a command inside '${...}' is not read")
            word.append(s[start:j + 1])
            self.i = j + 1
            return True
        m = re.match(r"\$(?:[A-Za-z_][A-Za-z0-9_]*|[0-9@*#?$!-])", s[start:])
        if m:
            word.append(m.group(0))
            self.i += len(m.group(0))
            return True
        word.append("$")
        self.i += 1
        return False

    def _arithmetic(self, j: int) -> None:
        """Skip `$((...))` or `((...))` from just inside the parentheses; a command inside is not read."""
        s, depth, start = self.s, 0, j
        while j < len(s):
            c = s[j]
            if c == "(":
                depth += 1
            elif c == ")":
                if depth == 0:
                    if not s.startswith("))", j):
                        raise Unparseable("arithmetic without '))'")
                    break
                depth -= 1
            j += 1
        else:
            raise Unparseable("arithmetic without '))'")
        if "$(" in s[start:j] or "`" in s[start:j]:
            raise Unparseable("a command inside arithmetic is not read")
        self.i = j + 2

    def _backtick(self, word: list[str]) -> None:
        s, start = self.s, self.i
        j = start + 1
        while j < len(s) and s[j] != "`":
            j += 2 if s[j] == "\\" else 1
        if j >= len(s):
            raise Unparseable("unterminated backtick")
        inner = re.sub(r"\\([`$\\])", r"\1", s[start + 1:j])
        parsed = _parse(inner, self.depth + 1)
        self.commands.extend(parsed.commands)
        if parsed.unparsed:
            raise Unparseable(f"inside a backtick substitution: {parsed.problem}")
        word.append(s[start:j + 1])
        self.i = j + 1
