"""Git's other ways in, found at launch and turned into policy rules for the session.

The policy protects the names of a repository's `.git` (its config, hooks, commondir, ...) by pattern. Two
kinds of name git reads code from cannot be written as patterns, because they depend on what is on disk:

- the targets of `include.path` and `includeIf.<cond>.path` in a config git reads (the engineer's
  `~/.gitconfig`, `$XDG_CONFIG_HOME/git/config`, `/etc/gitconfig`, and every repository config the scan
  found): rewrite an included file and git runs its core.fsmonitor, hooksPath or aliases, so each target
  (read with `git config --file X --no-includes`, resolved as git resolves it, followed to nested
  includes) becomes an asked write for the session, whether or not it exists yet;
- bare repositories inside the workspace (`mirror.git/` with HEAD, objects/ and refs/ at its top): the
  engineer's push to one runs its hooks, and its config is read there. Each gets the protections the
  policy gives a `.git`, by rewriting every `<workspace>/**/.git...` pattern of the policy onto it.

Both are added to the policy itself (so the decision engine, the fast path's uniformity probe and the
launch scan see them like any rule) before the scan that finds what exists runs again. Bounded and fail
closed: a config that git cannot read stops the launch with what to fix.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence

from guard.errors import Location, SandboxError
from guard.model import Kind, Op, Verdict
from guard.policy.engine import Policy
from guard.policy.paths import compile_path
from guard.policy.rules import Rule

INCLUDE_RULE = "git-include-targets"
MAX_CONFIGS = 400  # configs read at launch (nested includes count); past this the launch stops
MAX_DEPTH = 10  # git's own limit on nested includes
_GLOB_CHARS = frozenset("*?[]{}")
_CONFIG_NAMES = ("config", "config.worktree")


def home_configs(env: Mapping[str, str], home: str) -> list[str]:
    """The user-level and system configs the engineer's git reads outside any repository."""
    xdg = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    return [os.path.join(home, ".gitconfig"), os.path.join(xdg, "git", "config"), "/etc/gitconfig"]


def is_bare_repo(path: str) -> bool:
    """What git accepts as a git directory: a HEAD file, objects/ and refs/ (the `.git` of a repository is
    covered by the policy's own patterns, so names inside a `.git` are not reported)."""
    return (os.path.isfile(os.path.join(path, "HEAD")) and os.path.isdir(os.path.join(path, "objects"))
            and os.path.isdir(os.path.join(path, "refs")))


def repo_configs(paths: Iterable[str]) -> list[str]:
    """The repository configs among the scan's matches (`.git/config`, a submodule's, a worktree's)."""
    return sorted({p for p in paths if os.path.basename(p) in _CONFIG_NAMES and "/.git/" in p})


def _resolve(target: str, config: str, home: str) -> str:
    """As git does: `~/` is HOME, a relative path is relative to the including file's directory."""
    if target == "~" or target.startswith("~/"):
        target = home + target[1:]
    elif not os.path.isabs(target):
        target = os.path.join(os.path.dirname(config), target)
    return os.path.normpath(target)


def _include_paths(git: str, config: str) -> list[str]:
    """The raw include targets of one config file, without following them (git runs nothing here). A
    file that does not say `include` anywhere (section names are ASCII, any case) has none: git is
    asked only about the others, so a launch without includes costs a read per config."""
    try:
        with open(config, "rb") as f:
            if b"include" not in f.read().lower():
                return []
    except OSError as exc:
        raise SandboxError(f"cannot read the git config {config} ({exc.strerror}), so the files it includes "
                           "cannot be protected",
                           hint="make it readable or remove it, then start the session again") from exc
    proc = subprocess.run([git, "config", "--no-includes", "--null", "--file", config, "--get-regexp",
                           r"^include(if\..*)?\.path$"],
                          capture_output=True, timeout=30, check=False,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                               "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent"})
    if proc.returncode == 1:  # no such key
        return []
    if proc.returncode != 0:
        raise SandboxError(f"git cannot read {config}, so the files it includes cannot be protected: "
                           f"{proc.stderr.decode(errors='replace').strip()}",
                           hint="fix or remove that git config file, then start the session again")
    # with --null, --get-regexp prints "key\nvalue\0" per entry
    return [item.split("\n", 1)[1] for item in proc.stdout.decode(errors="surrogateescape").split("\0")
            if "\n" in item]


def include_targets(configs: Sequence[str], home: str) -> list[str]:
    """Every file the given configs include, directly or through nested includes (bounded)."""
    git = shutil.which("git")
    if git is None:
        return []  # no git on this host: nothing reads these files
    seen: set[str] = set()
    targets: list[str] = []
    frontier = [(os.path.realpath(c), 0) for c in configs if os.path.isfile(c)]
    while frontier:
        config, depth = frontier.pop()
        if config in seen:
            continue
        seen.add(config)
        if len(seen) > MAX_CONFIGS:
            raise SandboxError(f"more than {MAX_CONFIGS} git config files to read for include targets",
                               hint="remove nested or repeated [include] sections from the git configs")
        for raw in _include_paths(git, config):
            target = _resolve(raw, config, home)
            if target not in targets:
                targets.append(target)
            if depth + 1 < MAX_DEPTH and os.path.isfile(target):
                frontier.append((os.path.realpath(target), depth + 1))
            real = os.path.realpath(target)
            if real != target and real not in targets:
                targets.append(real)  # the write lands on the canonical name
    return targets


def _literal(path: str, why: str) -> str:
    if any(c in _GLOB_CHARS for c in path):
        raise SandboxError(f"{why} {path!r} has a glob character in its name, which a policy path "
                           "cannot name literally",
                           hint="rename it, or remove it from the workspace, before the session")
    return path


def _rebase(text: str, dot_git: str, bare: str) -> str | None:
    """`<ws>/**/.git/x` -> `<bare>/x` (and `<ws>/**/.git` -> `<bare>`); None for other patterns."""
    if text == dot_git:
        return bare
    if text.startswith(dot_git + "/"):
        return bare + text[len(dot_git):]
    return None


def augment(policy: Policy, *, workspace: str, includes: Sequence[str], bare_repos: Sequence[str]) -> Policy:
    """The policy with the session's include targets and bare repositories protected (see the module
    docstring); the same policy when there are none."""
    if not includes and not bare_repos:
        return policy
    dot_git = os.path.join(workspace, "**", ".git")
    rules: list[Rule] = []
    for rule in policy.rules:
        if rule.kind is Kind.FILE and bare_repos:
            extra = [compile_path(new) for p in rule.paths for b in bare_repos
                     if (new := _rebase(p.text, dot_git, _literal(b, "the bare repository"))) is not None]
            excepts = [compile_path(new) for p in rule.except_paths for b in bare_repos
                       if (new := _rebase(p.text, dot_git, b)) is not None]
            if extra:
                rule = dataclasses.replace(rule, paths=rule.paths + tuple(extra),
                                           except_paths=rule.except_paths + tuple(excepts))
        rules.append(rule)
    if includes:
        anchor = policy.rule("workspace-git-config")
        rules.append(Rule(
            id=INCLUDE_RULE, verdict=Verdict.ASK, ops=frozenset({Op.WRITE}), kind=Kind.FILE,
            reason=("A git config includes this file ([include] or [includeIf] path): what it says runs "
                    "at the engineer's next git command (core.fsmonitor, hooksPath, aliases); "
                    "a human decides."),
            audit_only=anchor.audit_only if anchor is not None else False,
            location=anchor.location if anchor is not None else Location("<launch: git include targets>"),
            paths=tuple(compile_path(_literal(t, "the git include target")) for t in includes)))
    fields = policy.__reduce__()[1][0]
    return Policy(**{**fields, "rules": tuple(rules)})


def bare_repos_under(root: str, dirs: Iterable[str]) -> list[str]:
    """The bare repositories among `dirs` (directories the launch scan walked) and `root` itself."""
    found = [d for d in [root, *dirs] if "/.git/" not in d + "/" and is_bare_repo(d)]
    return sorted(set(found))


def launch_configs(paths: Iterable[str], bare: Sequence[str], env: Mapping[str, str], home: str) -> list[str]:
    """Every config whose includes must be followed: the engineer's, the repositories', the bare ones'."""
    return [*home_configs(env, home), *repo_configs(paths), *(os.path.join(b, "config") for b in bare)]


__all__ = ["INCLUDE_RULE", "augment", "bare_repos_under", "include_targets", "is_bare_repo",
           "launch_configs"]
