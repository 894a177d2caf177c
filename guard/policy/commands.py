"""Command patterns: shell-like tokens matched against one simple command's argv.

The first token names the program: without a slash it matches the executable's basename (so `git`
covers `/usr/bin/git`), with a slash the full path. `*`, `?` and `[...]` glob within one token and the
token `...` stands for zero or more arguments.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from guard.policy.shell import MANY, ONE, WILDCARDS

ELLIPSIS = "..."
_GLOB = frozenset("*?[")


class CommandPatternError(ValueError):
    """A command pattern that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class CommandPattern:
    text: str
    tokens: tuple[str, ...]
    specificity: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        literal = not any(c in _GLOB for c in self.tokens[0])
        spec = sum(len(t) for t in self.tokens if t != ELLIPSIS) + (100 if literal else 0)
        object.__setattr__(self, "specificity", spec)

    @property
    def program(self) -> str:
        return self.tokens[0]

    @property
    def by_path(self) -> bool:
        return "/" in self.tokens[0]

    @property
    def literal_program(self) -> bool:
        return not any(c in _GLOB for c in self.tokens[0])

    def matches(self, argv: tuple[str, ...], *, prefix: bool = False) -> bool:
        """Does `argv` match? With `prefix`, a trailing remainder of argv is allowed (loose matching)."""
        if not argv:
            return False
        program = argv[0] if self.by_path else argv[0][argv[0].rfind("/") + 1:]
        if not _token_matches(self.tokens[0], program):
            return False
        tokens = (*self.tokens[1:], ELLIPSIS) if prefix else self.tokens[1:]
        return _match_args(tokens, argv[1:])

    @property
    def names_arguments(self) -> bool:
        """Does the pattern name a literal first argument (a subcommand), as `git push ...` does?"""
        first = self.tokens[1] if len(self.tokens) > 1 else ELLIPSIS
        return first != ELLIPSIS and not any(c in _GLOB for c in first)

    def could_match(self, words: tuple[str, ...]) -> bool:
        """Is there a command this pattern matches among those `words` may turn out to be? `words` may
        hold shell.ONE (any one word) and shell.MANY (any number of words), the program too."""
        if not words:
            return False
        program, args = words[0], words[1:]
        if program == MANY:
            args = words  # the unknown words may be the program and some arguments
        elif program != ONE:
            name = program if self.by_path else program[program.rfind("/") + 1:]
            if not _token_matches(self.tokens[0], name):
                return False
        return _could_match_args(self.tokens[1:], args)


def compile_command(text: str) -> CommandPattern:
    try:
        tokens = tuple(shlex.split(text))
    except ValueError as exc:
        raise CommandPatternError(f"bad command pattern {text!r}: {exc}") from None
    if not tokens:
        raise CommandPatternError("empty command pattern")
    if tokens[0] == ELLIPSIS:
        raise CommandPatternError(f"bad command pattern {text!r}: the first token must name a program")
    for token in tokens:
        if token.count("[") != token.count("]"):
            raise CommandPatternError(f"bad command pattern {text!r}: unbalanced '[' in {token!r}")
    return CommandPattern(text, tokens)


def _token_matches(pattern: str, word: str) -> bool:
    if any(c in _GLOB for c in pattern):
        return fnmatchcase(word, pattern)
    return pattern == word


def _match_args(tokens: tuple[str, ...], args: tuple[str, ...]) -> bool:
    """Match with `...` as zero-or-more; iterative two-pointer with backtracking to the last `...`."""
    ti = ai = 0
    star_ti, star_ai = -1, 0
    while ai < len(args):
        if ti < len(tokens) and tokens[ti] == ELLIPSIS:
            star_ti, star_ai = ti, ai
            ti += 1
        elif ti < len(tokens) and _token_matches(tokens[ti], args[ai]):
            ti += 1
            ai += 1
        elif star_ti != -1:
            star_ai += 1
            ti, ai = star_ti + 1, star_ai
        else:
            return False
    while ti < len(tokens) and tokens[ti] == ELLIPSIS:
        ti += 1
    return ti == len(tokens)


def _could_match_args(tokens: tuple[str, ...], words: tuple[str, ...]) -> bool:
    """Both sides have "any run of words" items (`...` in the pattern, MANY in the words): can they be
    made equal? reach[i][j] means tokens[:i] and words[:j] can; each step only moves forward."""
    n, m = len(tokens), len(words)
    if not any(w in WILDCARDS for w in words):
        return _match_args(tokens, words)
    reach = [[False] * (m + 1) for _ in range(n + 1)]
    reach[0][0] = True
    for i in range(n + 1):
        row = reach[i]
        t = tokens[i] if i < n else None
        for j in range(m + 1):
            if not row[j]:
                continue
            w = words[j] if j < m else None
            if t == ELLIPSIS:
                reach[i + 1][j] = True
                if j < m:
                    row[j + 1] = True
            if w == MANY:
                row[j + 1] = True
                if t is not None:
                    reach[i + 1][j] = True
            elif t is not None and w is not None and t != ELLIPSIS and (w == ONE or _token_matches(t, w)):
                reach[i + 1][j + 1] = True
    return reach[n][m]
