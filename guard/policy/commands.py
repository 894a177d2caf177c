"""Command patterns: shell-like tokens matched against one simple command's argv.

The first token names the program: without a slash it matches the executable's basename (so `git`
covers `/usr/bin/git`), with a slash the full path. `*`, `?` and `[...]` glob within one token and the
token `...` stands for zero or more arguments.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

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
