"""Git's other ways in, found at launch and turned into policy rules for the session.

The policy protects the names of a repository's `.git` (its config, hooks, commondir, ...) by pattern. Two
kinds of name git reads code from cannot be written as patterns, because they depend on what is on disk:

- the targets of `include.path` and `includeIf.<cond>.path` in a config git reads (the engineer's
  `~/.gitconfig`, `$XDG_CONFIG_HOME/git/config`, `/etc/gitconfig`, and every repository config the scan
  found): rewrite an included file and git runs its core.fsmonitor, hooksPath or aliases, so each target
  (read with `git config --file X --no-includes`, resolved as git resolves it, followed to nested
  includes) becomes an asked write for the session, whether or not it exists yet;
- what those configs make git run by itself, by path: the hooks of a `core.hooksPath` directory
  (`.githooks/` in the work tree is common) and the program of core.fsmonitor, pager, editor,
  sshCommand, filters, diff and merge drivers, credential helpers: a program the agent may rewrite is
  code the engineer's next git command runs, so each becomes an asked write too. (A `!` alias runs only
  when the engineer types it, like a project script they run: not protected, as project scripts are not);
- bare repositories inside the workspace (`mirror.git/` with HEAD, objects/ and refs/ at its top): the
  engineer's push to one runs its hooks, and its config is read there. Each gets the protections the
  policy gives a `.git`, by rewriting every `<workspace>/**/.git...` pattern of the policy onto it.

Both are added to the policy itself (so the decision engine, the fast path's uniformity probe and the
launch scan see them like any rule). What the engineer's own configs add is known before any scan and is
in the policy the scan runs with; the scan runs again only when what it found (a repository's config, a
bare repository) adds more (`launch_policy`). Bounded and fail closed: a config that git cannot read stops
the launch with what to fix.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from guard.errors import Location, SandboxError
from guard.model import Kind, Op, Verdict
from guard.policy.engine import Policy
from guard.policy.paths import compile_path
from guard.policy.rules import Rule

if TYPE_CHECKING:
    from guard.sandbox.scan import LaunchFacts

INCLUDE_RULE = "git-include-targets"
MAX_CONFIGS = 400  # included configs read at launch; past this the launch stops
MAX_DEPTH = 10  # git's own limit on nested includes
GIT_AT_ONCE = 4  # git config processes a launch runs at the same time
# the hooks git runs, by name (githooks(5)), looked up directly in the hooks directory
HOOK_NAMES = ("applypatch-msg", "pre-applypatch", "post-applypatch", "pre-commit", "pre-merge-commit",
              "prepare-commit-msg", "commit-msg", "post-commit", "pre-rebase", "post-checkout", "post-merge",
              "pre-push", "pre-receive", "update", "proc-receive", "post-receive", "post-update",
              "reference-transaction", "push-to-checkout", "pre-auto-gc", "post-rewrite",
              "sendemail-validate", "fsmonitor-watchman", "post-index-change", "p4-changelist",
              "p4-prepare-changelist", "p4-post-changelist", "p4-pre-submit")
_GLOB_CHARS = frozenset("*?[]{}")
_CONFIG_NAMES = ("config", "config.worktree")


def home_configs(env: Mapping[str, str], home: str) -> list[str]:
    """The user-level and system configs the engineer's git reads outside any repository (and those the
    engineer's environment names instead, GIT_CONFIG_GLOBAL and GIT_CONFIG_SYSTEM)."""
    xdg = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    named = [env[v] for v in ("GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM") if os.path.isabs(env.get(v, ""))]
    return [os.path.join(home, ".gitconfig"), os.path.join(xdg, "git", "config"), "/etc/gitconfig", *named]


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


# Keys whose value is a file git reads as config (includes), a directory it runs hooks from, or a command
# line it runs (its first word, when that is a path, is a program the agent must not rewrite).
_KEYS = (r"^(include(if\..*)?\.path|core\.(hookspath|fsmonitor|pager|editor|sshcommand|askpass)"
         r"|sequence\.editor|diff\.external|gpg\.(.*\.)?program|credential\..*helper"
         r"|filter\..*\.(clean|smudge|process)|diff\..*\.(command|textconv)|merge\..*\.driver)$")
_WORDS = (b"include", b"hookspath", b"fsmonitor", b"pager", b"editor", b"sshcommand", b"askpass", b"external",
          b"program", b"helper", b"filter", b"command", b"textconv", b"driver")


# a config (canonical) -> the pairs _read_all found in it, for the rest of one launch
Entries = dict[str, list[tuple[str, str]]]


def _asks_git(config: str) -> bool:
    """Whether a config file may hold keys that lead git to read config or run code: one that names none
    of them anywhere (section and key names are ASCII, any case) has none, and git is not asked about
    it, so most launches cost a read per config."""
    try:
        with open(config, "rb") as f:
            text = f.read().lower()
    except OSError as exc:
        raise SandboxError(f"cannot read the git config {config} ({exc.strerror}), so what it runs "
                           "cannot be protected",
                           hint="make it readable or remove it, then start the session again") from exc
    return any(w in text for w in _WORDS)


def _git_config(git: str, config: str) -> subprocess.Popen[bytes]:
    """git started on the keys of one config file, without following its includes (git runs nothing)."""
    argv = [git, "config", "--no-includes", "--null", "--file", config, "--get-regexp", _KEYS]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                 "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent"})


def _answer(config: str, proc: subprocess.Popen[bytes]) -> list[tuple[str, str]]:
    out, err = proc.communicate(timeout=30)
    if proc.returncode == 1:  # no such key
        return []
    if proc.returncode != 0:
        raise SandboxError(f"git cannot read {config}, so what it includes or runs cannot be protected: "
                           f"{err.decode(errors='replace').strip()}",
                           hint="fix or remove that git config file, then start the session again")
    # with --null, --get-regexp prints "key\nvalue\0" per entry
    return [(k, v) for k, _, v in (item.partition("\n") for item in
                                   out.decode(errors="surrogateescape").split("\0")) if k]


def _read_all(git: str, configs: Iterable[str], read: Entries) -> None:
    """The (key, value) pairs that lead git to read config or run code, of each config not in `read` yet,
    into `read`. git is asked about up to GIT_AT_ONCE of them at a time: a launch reads two or three (the
    engineer's, the system's, a repository's), about 1.5 ms each one after the other, and a workspace of
    many repositories must not start a git for each at once (processes, and descriptors under a low limit
    of open files). A file that cannot be read, or that git cannot read, stops the launch (SandboxError);
    every git started is reaped whatever happens."""
    asked: list[tuple[str, subprocess.Popen[bytes]]] = []

    def answer_oldest() -> None:
        config, proc = asked[0]
        read[config] = _answer(config, proc)
        asked.pop(0)  # only once it has exited: the `finally` below reaps what is still in the list

    try:
        for config in dict.fromkeys(configs):
            if config in read:
                continue
            if not _asks_git(config):
                read[config] = []
                continue
            if len(asked) >= GIT_AT_ONCE:
                answer_oldest()
            asked.append((config, _git_config(git, config)))
        while asked:
            answer_oldest()
    finally:
        for _, proc in asked:
            if proc.returncode is None:
                proc.kill()
                proc.wait()


def _program(key: str, value: str) -> str | None:
    """The program a command-valued key runs, when it is named by a path (a bare name is found on PATH)."""
    if key.startswith("credential.") and value.startswith("!"):
        value = value[1:]
    try:
        words = shlex.split(value)
    except ValueError:
        words = value.split()
    return words[0] if words and ("/" in words[0] or words[0].startswith("~")) else None


def include_targets(configs: Sequence[str], home: str, tops: Sequence[str] = (),
                    read: Entries | None = None) -> list[str]:
    """What the given configs lead git to read or run, as policy paths: every file they include (directly
    or through nested includes, followed while they exist), every hooks directory they name with the
    hooks git runs from it, and every program they name by path. A relative hooks directory or program is
    resolved against each of `tops` (repository work trees and the workspace: git runs hooks and commands
    there) as well as against the config's own directory. Bounded by MAX_CONFIGS and MAX_DEPTH. `read`
    keeps what each config held for later calls of the same launch (git is asked once per file)."""
    git = shutil.which("git")
    if git is None:
        return []  # no git on this host: nothing reads these files
    seen: set[str] = set()
    out: list[str] = []

    def add(path: str, hooks: bool = False) -> None:
        for name in dict.fromkeys((os.path.normpath(path), os.path.realpath(path))):  # and its canonical name
            # a hooks directory: its name (replaced by a symlink, it is read from elsewhere) and the names
            # git runs in it, not all it holds (`core.hooksPath = .` must not make the workspace an ask)
            for pattern in [name, *(os.path.join(name, h) for h in HOOK_NAMES)] if hooks else [name]:
                if _literal(pattern, "a name git config leads to") not in out:
                    out.append(pattern)

    frontier = [(os.path.realpath(c), 0) for c in configs if os.path.isfile(c)]
    read = {} if read is None else read
    _read_all(git, [c for c, _ in frontier], read)
    included = 0  # the configs themselves are bounded by the launch scan; what they include, here
    while frontier:
        config, depth = frontier.pop()
        if config in seen:
            continue
        seen.add(config)
        included += depth > 0
        if included > MAX_CONFIGS:
            raise SandboxError(f"the git configs include more than {MAX_CONFIGS} other files, each to read "
                               "for what it includes or runs",
                               hint="remove nested or repeated [include] sections from the git configs")
        if config not in read:
            _read_all(git, [config], read)  # an included file
        for key, value in read[config]:
            if key.endswith(".path") and key.startswith("include"):
                target = _resolve(value, config, home)
                add(target)
                if depth + 1 < MAX_DEPTH and os.path.isfile(target):
                    frontier.append((os.path.realpath(target), depth + 1))
                continue
            where = value if key == "core.hookspath" else _program(key, value)
            if not where:
                continue
            bases = [config] if os.path.isabs(where) or where.startswith("~") else \
                [config, *(os.path.join(t, "x") for t in tops)]
            for base in bases:
                add(_resolve(where, base, home), hooks=key == "core.hookspath")
    return out


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
            reason=("A git config includes this file ([include] or [includeIf] path), runs hooks from this "
                    "directory (core.hooksPath) or runs this program (core.fsmonitor, pager, editor, "
                    "filters, helpers): changing it runs code at the engineer's next git command; "
                    "a human decides."),
            audit_only=anchor.audit_only if anchor is not None else False,
            location=anchor.location if anchor is not None else Location("<launch: git include targets>"),
            paths=tuple(compile_path(t) for t in includes)))
    fields = policy.__reduce__()[1][0]
    return Policy(**{**fields, "rules": tuple(rules)})


def bare_repos_under(root: str, dirs: Iterable[str]) -> list[str]:
    """The bare repositories among `dirs` (directories the launch scan walked) and `root` itself."""
    found = [d for d in [root, *dirs] if "/.git/" not in d + "/" and is_bare_repo(d)]
    return sorted(set(found))


def work_trees(configs: Iterable[str], workspace: str, bare: Sequence[str]) -> list[str]:
    """Where git runs hooks and commands for the repositories found (a relative hooksPath or program is
    resolved there): the workspace, each `<top>/.git`'s top, a submodule's checkout, each bare repository."""
    tops = {workspace, *bare}
    for config in configs:
        top, sep, rest = config.partition("/.git/")
        if not sep:
            continue
        tops.add(top)
        if rest.startswith("modules/"):
            tops.add(os.path.join(top, os.path.dirname(rest.removeprefix("modules/"))))
    return sorted(tops)


def launch_configs(paths: Iterable[str], bare: Sequence[str], env: Mapping[str, str], home: str) -> list[str]:
    """Every config whose includes must be followed: the engineer's, the repositories', the bare ones'."""
    return [*home_configs(env, home), *repo_configs(paths), *(os.path.join(b, "config") for b in bare)]


def launch_policy(policy: Policy, *, workspace: str, env: Mapping[str, str],
                  scan: Callable[[Policy], LaunchFacts]) -> tuple[Policy, LaunchFacts, list[str]]:
    """The session's policy with git's other ways in protected, the scan's facts under it, and the bare
    repositories of the workspace.

    What git's configs lead to is known only after a scan (it finds the repositories' configs and the
    bare repositories), and the rules it adds need a scan of their own. The engineer's own configs
    (~/.gitconfig, /etc/gitconfig) are readable before any scan, and usually they alone add rules (a
    credential helper or an editor named by path): so the first scan runs with their rules already in
    the policy, and a second scan runs only when what the scan found adds anything (a repository's
    config that names a hook directory or a program, a bare repository). The policy and the facts are
    then those a scan of the final policy gives. If a rule of the guess itself matched a repository's
    config, the repositories' configs cannot be told from the guess's own effects: the launch then scans
    the policy as written first, as it always did."""
    read: Entries = {}
    home = policy.home
    guess = include_targets(home_configs(env, home), home, [workspace], read)
    first = augment(policy, workspace=workspace, includes=guess, bare_repos=[])
    facts = scan(first)
    if first is not policy and repo_configs(m.path for m in facts.matches if m.rule_id == INCLUDE_RULE):
        first, facts = policy, scan(policy)
    bare = bare_repos_under(workspace, facts.head_dirs)
    configs = launch_configs((m.path for m in facts.matches), bare, env, home)
    includes = include_targets(configs, home, work_trees(configs, workspace, bare), read)
    if not bare and includes == (guess if first is not policy else []):
        return first, facts, bare  # the scan ran with exactly the final policy
    final = augment(policy, workspace=workspace, includes=includes, bare_repos=bare)
    return final, scan(final), bare


__all__ = ["HOOK_NAMES", "INCLUDE_RULE", "augment", "bare_repos_under", "include_targets", "is_bare_repo",
           "launch_configs", "launch_policy", "work_trees"]
