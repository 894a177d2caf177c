from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guard.policy.paths import GlobError, PathKind, ancestors, compile_path, normalize_path


@pytest.mark.parametrize(("pattern", "path", "expected"), [
    ("/a/*.py", "/a/x.py", True),
    ("/a/*.py", "/a/b/x.py", False),  # * stays in one segment
    ("/a/?.py", "/a/x.py", True),
    ("/a/?.py", "/a/xy.py", False),
    ("/a/**", "/a", True),  # dir/** matches dir itself
    ("/a/**", "/a/b/c/d", True),
    ("/a/**", "/ab", False),
    ("/a/**/b", "/a/b", True),  # ** spans zero segments
    ("/a/**/b", "/a/x/y/b", True),
    ("/a/**/b", "/a/x/yb", False),
    ("**/.env", "/.env", True),  # leading **/ matches anywhere
    ("**/.env", "/srv/app/.env", True),
    ("**/.env", "/srv/app/.envrc", False),
    ("**/.env.*", "/x/.env.local", True),
    ("/a/[bc]at", "/a/cat", True),
    ("/a/[!bc]at", "/a/cat", False),
    ("/a/[!bc]at", "/a/rat", True),
    ("/a/[!bc]at", "/a//at", False),
    ("/a/*", "/a/.hidden", True),  # * matches dotfiles: deny rules must not miss them
    ("/a/b", "/a/b", True),
    ("/a/b", "/a/b/c", False),
    ("/a/./b/../c", "/a/c", True),  # patterns are normalized
    ("/a/x\\*y", "/a/x*y", True),
    ("/a/x\\*y", "/a/xzy", False),
    ("/**", "/anything/at/all", True),
])
def test_glob_semantics(pattern: str, path: str, expected: bool) -> None:
    assert compile_path(pattern).matches(path) is expected


@pytest.mark.parametrize(("pattern", "message"), [
    ("/a/b**", "must be a whole path segment"),
    ("/a/[bc", "unclosed '['"),
    ("/a/[]", "unclosed '['"),  # a leading ] is literal, as in fnmatch
    ("relative/x", "not absolute"),
    ("", "empty path pattern"),
    ("/a/x\\", "trailing backslash"),
])
def test_bad_globs(pattern: str, message: str) -> None:
    with pytest.raises(GlobError, match=message.replace("[", r"\[")):
        compile_path(pattern)


def test_kinds_and_prefixes() -> None:
    assert compile_path("/a/b").kind is PathKind.EXACT
    tree = compile_path("/a/b/**")
    assert (tree.kind, tree.prefix) == (PathKind.TREE, "/a/b")
    glob = compile_path("/a/*/c/**")
    assert (glob.kind, glob.prefix) == (PathKind.GLOB, "/a")
    anywhere = compile_path("**/.env")
    assert (anywhere.text, anywhere.prefix) == ("/**/.env", "/")


def test_normalize_and_ancestors() -> None:
    assert normalize_path("//a/./b/../c/") == "/a/c"
    assert ancestors("/a/b/c") == ["/", "/a", "/a/b", "/a/b/c"]
    assert ancestors("/") == ["/"]


_segment = st.text(alphabet="abc.-_", min_size=1, max_size=5).filter(lambda s: s not in (".", ".."))


@given(st.lists(_segment, min_size=1, max_size=6), st.lists(_segment, min_size=0, max_size=4))
def test_tree_matches_exactly_the_subtree(prefix: list[str], rest: list[str]) -> None:
    base = "/" + "/".join(prefix)
    pattern = compile_path(base + "/**")
    assert pattern.matches(base + ("/" + "/".join(rest) if rest else ""))
    assert not pattern.matches(base + "x")
    # the tree fast path agrees with the regex translation of an equivalent glob
    glob = compile_path(base + "/**/" + "*")
    target = base + "/" + "/".join(rest) if rest else base
    assert glob.matches(target) is (bool(rest))


@pytest.mark.parametrize(("pattern", "path", "expected"), [
    ("/**/a/**/b/**/c", "/a/b/c", True),
    ("/**/a/**/b/**/c", "/x/a/y/b/z/w/c", True),
    ("/**/a/**/b/**/c", "/x/a/y/c/b", False),
    ("/**/a/**/b/**", "/a/b", True),
    ("/r/**/**/x", "/r/x", True),  # consecutive ** collapse
    ("/r/**/*.py/**/t?", "/r/a/m.py/q/tz", True),
    ("/r/**/*.py/**/t?", "/r/a/m.py/q/tzz", False),
])
def test_several_inner_double_stars(pattern: str, path: str, expected: bool) -> None:
    compiled = compile_path(pattern)
    assert compiled.kind is PathKind.SEGMENTS or pattern == "/r/**/**/x"
    assert compiled.matches(path) is expected


def test_adversarial_path_is_matched_in_linear_steps() -> None:
    # With regex backtracking this would take O(n^3) steps; the segment matcher takes O(n * m).
    pattern = compile_path("/**/a/**/a/**/a/**/z")
    assert pattern.kind is PathKind.SEGMENTS
    assert not pattern.matches("/a" * 2000 + "/y")


@given(st.lists(st.sampled_from(["a", "b", "**", "*", "?"]), min_size=1, max_size=6),
       st.lists(st.sampled_from(["a", "b", "ab", "c"]), min_size=0, max_size=6))
def test_segment_matcher_agrees_with_the_regex_translation(pattern_segs: list[str], path_segs: list[str]) -> None:
    import re

    from guard.policy import paths

    pattern = "/" + "/".join(pattern_segs)
    path = "/" + "/".join(path_segs) if path_segs else "/"
    compiled = compile_path(pattern)
    segs = [s for i, s in enumerate(pattern_segs) if not (s == "**" and i > 0 and pattern_segs[i - 1] == "**")]
    body = "".join("(?:/.*)?" if s == "**" else "/" + paths._segment_regex(s, pattern) for s in segs)
    reference = re.fullmatch(body or "/", path, re.DOTALL) is not None
    assert compiled.matches(path) is reference
