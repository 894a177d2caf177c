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
