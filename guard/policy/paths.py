"""Path globs: compiled once, matched by the cheapest test that is exact.

Semantics (docs/policy.md): `*` and `?` stay inside one segment, `**` as a whole segment spans any depth
including none, `[...]` is a character class, `dir/**` also matches `dir`, and a leading `**/` matches at
any depth (it is stored as `/**/`, so every compiled pattern is absolute and the sandbox planner can take
its literal prefix as a Landlock root).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from enum import Enum

_GLOB_CHARS = frozenset("*?[")


class PathKind(Enum):
    EXACT = "exact"  # no glob at all: string equality
    TREE = "tree"  # literal/** : the directory and everything under it
    GLOB = "glob"  # at most one inner `**`: a regular expression
    SEGMENTS = "segments"  # several inner `**`: matched segment by segment, linear in the path's depth


class GlobError(ValueError):
    """A pattern that is not a valid path glob; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class PathPattern:
    text: str  # normalized absolute pattern, as shown to people and to the sandbox planner
    kind: PathKind
    prefix: str  # longest literal leading directory ("/" at least)
    regex: re.Pattern[str] | None
    # For SEGMENTS: one regex per segment, None for `**`. A regex with several `(?:/.*)?` groups can
    # backtrack for a very long time on a path an agent chose; this cannot.
    segments: tuple[re.Pattern[str] | None, ...] | None = None
    # Longer literal parts are more specific; exact paths beat any glob of the same length.
    specificity: int = field(init=False, compare=False)
    # A pattern that matches anywhere (`**/.env`) is indexed by its literal last segment instead.
    basename: str | None = field(init=False, compare=False)

    def __post_init__(self) -> None:
        exact = 1 if self.kind is PathKind.EXACT else 0
        object.__setattr__(self, "specificity", len(self.prefix) * 2 + exact)
        last = self.text.rsplit("/", 1)[-1]
        anywhere = self.prefix == "/" and self.kind in (PathKind.GLOB, PathKind.SEGMENTS)
        object.__setattr__(self, "basename", last if anywhere and last and not _has_glob(last) else None)

    def matches(self, path: str) -> bool:
        if self.kind is PathKind.EXACT:
            return path == self.text
        if self.kind is PathKind.TREE:
            prefix = self.prefix
            return prefix == "/" or path == prefix or path.startswith(prefix + "/")
        if self.regex is not None:
            return self.regex.fullmatch(path) is not None
        assert self.segments is not None
        return _match_segments(self.segments, path.split("/")[1:] if path != "/" else [])


def normalize_path(path: str) -> str:
    """Collapse `.`, `..`, repeated and trailing slashes of an absolute path (no disk access)."""
    norm = posixpath.normpath(path)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    return norm


def compile_path(text: str) -> PathPattern:
    """Compile an expanded pattern; raises GlobError naming the problem."""
    if not text:
        raise GlobError("empty path pattern")
    if text == "**" or text.startswith("**/"):
        text = "/" + text
    if not text.startswith("/"):
        raise GlobError(f"path pattern {text!r} is not absolute")
    text = normalize_path(text)
    segments = text.split("/")[1:] if text != "/" else []
    segments = [seg for i, seg in enumerate(segments)
                if not (seg == "**" and i > 0 and segments[i - 1] == "**")]  # /**/**/ is /**/
    text = "/" + "/".join(segments)
    for seg in segments:
        if "**" in seg and seg != "**":
            raise GlobError(f"'**' must be a whole path segment in {text!r}; "
                            "write '*' to stay within one segment")
    globbed = [i for i, seg in enumerate(segments) if _has_glob(seg)]
    if not globbed:
        return PathPattern(text, PathKind.EXACT, text, None)
    literal = segments[: globbed[0]]
    prefix = "/" + "/".join(literal)
    parts = [_segment_regex(seg, text) for seg in segments]  # validates every segment
    if globbed == [len(segments) - 1] and segments[-1] == "**":
        return PathPattern(text, PathKind.TREE, prefix, None)
    if segments[:-1].count("**") > 1:
        compiled = tuple(None if seg == "**" else re.compile(part, re.DOTALL)
                         for seg, part in zip(segments, parts, strict=True))
        return PathPattern(text, PathKind.SEGMENTS, prefix, None, compiled)
    body = ""
    for seg, part in zip(segments, parts, strict=True):
        body += "(?:/.*)?" if seg == "**" else "/" + part
    return PathPattern(text, PathKind.GLOB, prefix, re.compile(body or "/", re.DOTALL))


def _match_segments(pattern: tuple[re.Pattern[str] | None, ...], parts: list[str]) -> bool:
    """Glob matching with `**` (None) as any number of segments, in O(len(parts) * len(pattern)) steps."""
    pi = si = 0
    star_pi, star_si = -1, 0
    while si < len(parts):
        more = pi < len(pattern)
        current = pattern[pi] if more else None
        if more and current is None:
            star_pi, star_si = pi, si
            pi += 1
        elif current is not None and current.fullmatch(parts[si]):
            pi += 1
            si += 1
        elif star_pi != -1:
            star_si += 1
            pi, si = star_pi + 1, star_si
        else:
            return False
    while pi < len(pattern) and pattern[pi] is None:
        pi += 1
    return pi == len(pattern)


def _has_glob(segment: str) -> bool:
    return any(c in _GLOB_CHARS for c in segment) or "\\" in segment


def _segment_regex(seg: str, pattern: str) -> str:
    if seg == "**":
        return ""
    out: list[str] = []
    i, n = 0, len(seg)
    while i < n:
        c = seg[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\":
            if i + 1 >= n:
                raise GlobError(f"trailing backslash in {pattern!r}")
            i += 1
            out.append(re.escape(seg[i]))
        elif c == "[":
            end, cls = _char_class(seg, i, pattern)
            out.append(cls)
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _char_class(seg: str, start: int, pattern: str) -> tuple[int, str]:
    """Translate `[...]` starting at `start`; returns the index of the closing bracket and the regex."""
    i = start + 1
    negate = i < len(seg) and seg[i] in "!^"
    if negate:
        i += 1
    body_start = i
    if i < len(seg) and seg[i] == "]":
        i += 1  # a leading ']' is literal
    while i < len(seg) and seg[i] != "]":
        i += 1
    if i >= len(seg):
        raise GlobError(f"unclosed '[' in {pattern!r}")
    body = seg[body_start:i]
    escaped = "".join("\\" + ch if ch in "\\^]" else ch for ch in body)
    if "/" in body:
        raise GlobError(f"'/' cannot appear in a character class in {pattern!r}")
    return i, f"[{'^' if negate else ''}{escaped}]" if not negate else f"[^/{escaped}]"


def ancestors(path: str) -> list[str]:
    """`/a/b/c` -> ["/", "/a", "/a/b", "/a/b/c"]: every key a path index must look up."""
    keys = ["/"]
    idx = path.find("/", 1)
    while idx != -1:
        keys.append(path[:idx])
        idx = path.find("/", idx + 1)
    if path != "/":
        keys.append(path)
    return keys
