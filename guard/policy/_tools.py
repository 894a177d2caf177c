"""Commands the way the tools themselves read them: the normalised forms `run` rules are matched on.

`git -C . push --force`, `exec -a gitx git push`, `/usr/lib/git-core/git-push` and `npm --prefix . publish`
all mean a publish, but their argv words do not start with `git push` or `npm publish`. `forms()` turns
one simple command (its words, and for an exec the resolved executable) into every reading that may be
what runs:

- the words as written, and with the program replaced by the resolved executable (path patterns);
- for each name the program goes by (argv[0]'s and the executable's basename, a multi-call name such as
  `git-push`, a script such as `npm-cli.js` run by node, `python -m twine`): the tool's own global options
  before the subcommand are dropped (`git -C . -c k=v push` -> `git push`), inline aliases are expanded
  (`git -c alias.p=push p`), plumbing that publishes is named for what it does (`git send-pack` ->
  `git push`);
- wrappers and launchers (`env`, `nice`, `timeout`, `xargs`, `sudo -u`, `exec -a`, `npx`, `uv run`, ...):
  every later word position is read as a possible program, so an option this module does not know
  cannot hide the command behind it;
- command strings run by a shell (`sh -c`, `eval`, `trap`, `su -c`, `watch`): read as lines of their own.

A reading that cannot be certain carries wildcards (shell.ONE / shell.MANY): an unknown subcommand of a
tool that has aliases may be any subcommand (`git x` -> `git MANY`), inline config that changes what a
push does makes its arguments unknown, `xargs` appends unknown words. The engine matches such a form
against every rule that *could* match it, so it falls to the strictest of them, never to allow.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field

from guard.policy.shell import MANY, ONE, WILDCARDS, loose_tokens, parse_line

_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
MAX_DEPTH = 6
MAX_FORMS = 256
SCAN_WINDOW = 24  # word positions after a wrapper tried as the program (the rest is arguments)


@dataclass(frozen=True, slots=True)
class Form:
    """One reading of a command. `loose`: words of text that could not be parsed; every position of them
    is tried as a program (with any remainder allowed)."""

    words: tuple[str, ...]
    how: str = ""
    loose: bool = False

    @property
    def shown(self) -> str:
        return " ".join("<?>" if w == ONE else "<...>" if w == MANY else shlex.quote(w) for w in self.words)


@dataclass(frozen=True, slots=True)
class _Tool:
    valued: frozenset[str]  # global options that take a value (next word, `--opt=v`, or `-Xv` for short ones)
    flags: frozenset[str] = frozenset()  # global options without a value
    subcommands: frozenset[str] | None = None  # known subcommands; others may be aliases (None: any word)
    rename: dict[str, tuple[str, ...]] = field(default_factory=dict)
    uncertain: frozenset[str] = frozenset()  # subcommands whose real arguments cannot be read from argv
    plus_first: bool = False  # cargo's `+toolchain`


def _fs(text: str) -> frozenset[str]:
    return frozenset(text.split())


_GIT_SUBCOMMANDS = _fs("""
add am annotate apply archive backfill bisect blame branch bugreport bundle cat-file check-attr check-ignore
check-mailmap check-ref-format checkout checkout-index cherry cherry-pick citool clean clone column commit
commit-graph commit-tree config count-objects credential credential-cache credential-store daemon describe
diagnose diff diff-files diff-index diff-tree difftool fast-export fast-import fetch fetch-pack filter-branch
fmt-merge-msg for-each-ref for-each-repo format-patch fsck fsck-objects gc get-tar-commit-id grep gui
hash-object help hook http-backend http-fetch http-push imap-send index-pack init init-db instaweb
interpret-trailers last-modified log ls-files ls-remote ls-tree mailinfo mailsplit maintenance merge
merge-base merge-file merge-index merge-octopus merge-one-file merge-ours merge-recursive merge-recursive-ours
merge-recursive-theirs merge-resolve merge-subtree merge-tree mergetool mktag mktree multi-pack-index mv
name-rev notes pack-objects pack-redundant pack-refs patch-id pickaxe prune prune-packed pull push
quiltimport range-diff read-tree rebase receive-pack reflog refs remote remote-ext remote-fd remote-ftp
remote-ftps remote-http remote-https repack replace replay request-pull rerere reset restore rev-list
rev-parse revert rm send-email send-pack shell shortlog show show-branch show-index show-ref
sparse-checkout stage stash status stripspace submodule subtree switch symbolic-ref tag unpack-file
unpack-objects update-index update-ref update-server-info upload-archive upload-pack var verify-commit
verify-pack verify-tag version whatchanged worktree write-tree
lfs annex flow absorb filter-repo crypt secret town machete branchless extras sizer svn p4 cvsimport
cvsserver archimport bisect--helper checkout--worker credential-cache--daemon env--helper fsmonitor--daemon
submodule--helper upload-archive--writer mergetool--lib sh-setup sh-i18n
""")


def _git_knows(sub: str) -> bool:
    """Subcommands git itself runs (internal helpers, credential and remote helpers) are not aliases."""
    return sub in _GIT_SUBCOMMANDS or "--" in sub or sub.startswith(("credential-", "remote-"))

_TOOLS: dict[str, _Tool] = {
    "git": _Tool(
        valued=_fs("-C -c --git-dir --work-tree --namespace --super-prefix --config-env --attr-source "
                   "--list-cmds"),
        flags=_fs("-p --paginate -P --no-pager --no-replace-objects --bare --literal-pathspecs "
                  "--glob-pathspecs --noglob-pathspecs --icase-pathspecs --no-optional-locks --no-lazy-fetch "
                  "--no-advice -v --version -h --help --html-path --man-path --info-path --exec-path"),
        subcommands=_GIT_SUBCOMMANDS,
        # plumbing that publishes is a push; receive-pack takes the update commands on stdin, so whether
        # it forces cannot be read from argv
        rename={"send-pack": ("push",), "http-push": ("push",), "receive-pack": ("push",)},
        uncertain=_fs("receive-pack"),
    ),
    "npm": _Tool(valued=_fs("--prefix -C --workspace -w --userconfig --globalconfig --cache --registry "
                            "--loglevel --otp --tag --access --scope --include --omit --location -L"),
                 flags=_fs("-g --global --workspaces -ws --include-workspace-root --dry-run -y --yes --no "
                           "-s --silent -q --quiet -d --verbose -dd --json -f --force -h --help -v --version "
                           "--offline --prefer-offline --prefer-online --ignore-scripts --no-audit "
                           "--no-fund"),
                 rename={"x": ("exec",), "run-script": ("run",), "rum": ("run",), "urn": ("run",)}),
    "pnpm": _Tool(valued=_fs("-C --dir --filter -F --filter-prod --reporter --loglevel "
                             "--workspace-concurrency "
                             "--store-dir --virtual-store-dir --config"),
                  flags=_fs("-w --workspace-root -r --recursive --stream --parallel -s --silent -h --help "
                            "-v --version --no-bail --bail --sort --no-sort --reverse -g --global")),
    "yarn": _Tool(valued=_fs("--cwd --cache-folder --modules-folder --registry --global-folder --mutex "
                             "--network-timeout --link-folder --preferred-cache-folder"),
                  flags=_fs("-s --silent --verbose --offline --prefer-offline --frozen-lockfile "
                            "--non-interactive "
                            "--no-progress -h --help -v --version --json --ignore-engines")),
    "cargo": _Tool(valued=_fs("--config -Z -C --color --explain"),
                   flags=_fs("--locked --offline --frozen -v -vv -vvv --verbose -q --quiet -V --version "
                             "-h --help --list"),
                   subcommands=_fs("""
add bench build check clean clippy config doc fetch fix fmt generate-lockfile help info init install
locate-project login logout metadata miri new owner package pkgid publish read-manifest remove report run
rustc rustdoc search test tree uninstall update vendor verify-project version yank nextest watch audit deny
expand llvm-cov binstall outdated udeps machete sort edit make insta hack criterion dist release tarpaulin
                   """),
                   # `cargo b|c|d|r|t|rm` are built-in aliases that a workspace's .cargo/config.toml may
                   # redefine (cargo expands aliases in-process): their meaning cannot be read from argv
                   uncertain=_fs("b c d n r t rm"), plus_first=True),
    "pip": _Tool(valued=_fs("--log --proxy --retries --timeout --exists-action --trusted-host --cert "
                            "--client-cert --cache-dir --python --use-feature --use-deprecated "
                            "--keyring-provider --root-user-action"),
                 flags=_fs("--isolated -v --verbose -q --quiet --no-cache-dir --disable-pip-version-check "
                           "--no-color --no-input --require-virtualenv --no-python-version-warning --debug "
                           "-h --help -V --version")),
    "twine": _Tool(valued=frozenset(), flags=_fs("--no-color --version -h --help")),
    "uv": _Tool(valued=_fs("--directory --project --config-file --cache-dir --color --allow-insecure-host "
                           "-p --python"),
                flags=_fs("--native-tls --offline --no-progress -q --quiet -v --verbose -n --no-cache "
                          "--preview --no-preview --no-config --managed-python --no-managed-python "
                          "--no-python-downloads -h --help -V --version")),
    "poetry": _Tool(valued=_fs("-C --directory -P --project"),
                    flags=_fs("-n --no-interaction -q --quiet -v -vv -vvv --verbose --ansi --no-ansi "
                              "--no-plugins --no-cache -h --help -V --version")),
    "gh": _Tool(valued=_fs("-R --repo --hostname"), flags=_fs("--help --version")),
    "docker": _Tool(valued=_fs("--config -c --context -H --host -l --log-level --tlscacert --tlscert "
                               "--tlskey"),
                    flags=_fs("-D --debug --tls --tlsverify -v --version --help")),
    "podman": _Tool(valued=_fs("--connection -c --url --identity --root --runroot --storage-driver "
                               "--cgroup-manager --log-level --module --events-backend --tmpdir"),
                    flags=_fs("--remote -r --help -v --version --syslog")),
    "gem": _Tool(valued=_fs("--config-file"), flags=_fs("--backtrace --debug --norc -h --help -v --version")),
    "go": _Tool(valued=_fs("-C"), flags=frozenset()),
    "kubectl": _Tool(valued=_fs("-n --namespace --context --cluster --user --kubeconfig -s --server --token "
                                "--as --as-group -v --v --request-timeout"),
                     flags=_fs("--insecure-skip-tls-verify --help")),
    "terraform": _Tool(valued=frozenset(), flags=_fs("-help -version"), plus_first=False),
}

_TOOL_NAMES = {  # other names a tool's program goes by (scripts run by an interpreter, versioned names)
    "npm-cli.js": "npm", "npx-cli.js": "npx", "pnpm.cjs": "pnpm", "pnpm.js": "pnpm", "pnpm.mjs": "pnpm",
    "pnpx.cjs": "pnpx", "yarn.js": "yarn", "yarn.cjs": "yarn", "yarnpkg": "yarn", "pip3": "pip",
    "podman-remote": "podman", "docker.io": "docker", "corepack.cjs": "corepack", "hub": "git",
}

# Programs that run another program named among their arguments. Their options are not modelled: every
# later word position is tried as the program.
_WRAPPERS = _fs("""
env nohup nice timeout stdbuf time exec command builtin xargs sudo doas pkexec run0 runuser su setsid ionice
chrt taskset flock chroot unshare nsenter systemd-run strace ltrace watch caffeinate firejail bwrap proot
fakeroot faketime torsocks proxychains proxychains4 busybox dbus-run-session xvfb-run catchsegv valgrind gdb
script npx pnpx bunx uvx pipx corepack direnv dotenv mise asdf rtx nix rustup rbenv pyenv nodenv volta fnm
with-contenv tini dumb-init s6-setuidgid gosu su-exec chpst setpriv capsh numactl cgexec sg newgrp
pdm hatch rye pipenv conda mamba micromamba bun deno coproc
""")
_LAUNCH_SUBCOMMANDS = {  # `tool SUB cmd...` runs cmd
    "npm": _fs("exec"), "pnpm": _fs("exec dlx"), "yarn": _fs("exec dlx run node"), "uv": _fs("run tool"),
    "poetry": _fs("run"), "pdm": _fs("run"), "hatch": _fs("run"), "rye": _fs("run"), "pipenv": _fs("run"),
    "conda": _fs("run"), "mamba": _fs("run"), "bun": _fs("x run exec"), "deno": _fs("run"),
    "cargo": frozenset(), "gh": frozenset(),
}
_SHELLS = _fs("sh bash dash zsh ksh mksh ash yash posh fish")
_STRING_RUNNERS = _fs("eval trap su script watch")  # builtins and tools whose argument is a command line
_PYTHON = re.compile(r"(python|pypy)[0-9.]*$")
_KNOWN_PROGRAMS = (frozenset(_TOOLS) | _WRAPPERS | _STRING_RUNNERS | _SHELLS | frozenset(_TOOL_NAMES)
                   | frozenset({"find", "node", "nodejs"}))
_NODE = _fs("node nodejs")
_PY_VALUED = _fs("-W -X --check-hash-based-pycs")
_NODE_VALUED = _fs("-r --require --import --loader --experimental-loader -C --conditions --input-type "
                   "--title "
                   "--env-file --stack-size")
_FORCING_SETTING = re.compile(
    r"remote\..*\.(push=\s*\+|mirror=(?!\s*(false|no|off|0)\s*$))|includeif\.|include\.", re.IGNORECASE)


TRUNCATED = "[guard: argv truncated]"  # what the supervisor appends to an argv it could not read whole


def is_known_program(name: str) -> bool:
    """A program this module reads in its own way (a tool, wrapper, shell or interpreter)."""
    return name in _KNOWN_PROGRAMS or bool(_PYTHON.match(name)) or name.startswith("git-")


def window_forms(words: tuple[str, ...]) -> list[Form]:
    """The readings of words found in text that could not be parsed, from a position that names a
    program: matched with any remainder allowed."""
    if not words or not is_known_program(_basename(words[0])):
        return [Form(words)]
    return forms(words)


def forms(words: tuple[str, ...], exe: str | None = None) -> list[Form]:
    """Every reading of one simple command (see the module docstring). The first is as written."""
    out: list[Form] = []
    _forms(words, exe, out, 0, "")
    return _dedupe(out)


def exec_forms(argv: tuple[str, ...], exe: str) -> list[Form]:
    """The readings of an exec: its exact argv (no shell between) and the executable the kernel runs.
    An argv cut short by the interceptor ends in unknown words."""
    if argv and argv[-1] == TRUNCATED:
        argv = (*argv[:-2], ONE, MANY) if len(argv) > 2 else (argv[0], MANY)
    out: list[Form] = []
    _forms(argv, exe, out, 0, "", assignments=False)
    return _dedupe(out)


def line_forms(text: str, depth: int = 0) -> list[Form]:
    """The forms of every command of a shell line, and a loose form for text that could not be read."""
    out: list[Form] = []
    _line(text, out, depth, "")
    return _dedupe(out)


def _dedupe(items: list[Form]) -> list[Form]:
    seen: set[tuple[tuple[str, ...], bool]] = set()
    out = []
    for f in items:
        key = (f.words, f.loose)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def _line(text: str, out: list[Form], depth: int, how: str) -> None:
    if depth > MAX_DEPTH:
        out.append(Form(tuple(loose_tokens(text)), f"{how}nested too deeply", loose=True))
        return
    parsed = parse_line(text)
    for cmd in parsed.commands:
        _forms(cmd.words, None, out, depth + 1, how)
    if parsed.unparsed:
        out.append(Form(tuple(loose_tokens(parsed.unparsed)), f"{how}not parsed: {parsed.problem}",
                        loose=True))


def _basename(word: str) -> str:
    return word[word.rfind("/") + 1:]


def _forms(words: tuple[str, ...], exe: str | None, out: list[Form], depth: int, how: str,
           assignments: bool = True) -> None:
    env: list[str] = []
    while assignments and words and words[0] not in WILDCARDS and _ASSIGNMENT.match(words[0]):
        env.append(words[0].partition("=")[0])
        words = words[1:]
    if not words or len(out) > MAX_FORMS:
        return
    out.append(Form(words, how or "as written"))
    if depth > MAX_DEPTH:
        return
    names = [words[0]]
    if exe and exe != words[0]:
        out.append(Form((exe, *words[1:]), f"{how}the executable {exe}"))
        if not (_basename(exe) == "git" and _basename(words[0]).startswith("git-")):
            names.append(exe)  # (git run as git-push reads its command from argv[0], not from argv[1])
    for base in dict.fromkeys(_basename(p) for p in names if p not in WILDCARDS):
        _named(base, words, out, depth, how, tuple(env))


def _named(base: str, words: tuple[str, ...], out: list[Form], depth: int, how: str,
           env: tuple[str, ...] = ()) -> None:
    args = words[1:]
    base = re.sub(r"(?<=.)(@|==).*$", "", _TOOL_NAMES.get(base, base))  # npx npm@10, uvx twine==5
    base = _TOOL_NAMES.get(base, base)
    if base.endswith((".js", ".cjs", ".mjs", ".py")) and base.rsplit(".", 1)[0] in _TOOLS:
        base = base.rsplit(".", 1)[0]
    config = tuple(f"env={name}" for name in env)
    if base.startswith("git-") and base != "git-":
        # a multi-call name: git run as `git-push` (a helper path, a link, or exec -a) is `git push`
        _tool("git", (base[4:], *args), out, depth, f"{how}{base} is git {base[4:]}; ", config0=config)
    elif base in _TOOLS:
        _tool(base, args, out, depth, how, config0=config)
    if base in _WRAPPERS or base in _STRING_RUNNERS:
        _wrapped(base, args, out, depth, how)
    if base in _SHELLS:
        _shell(base, args, out, depth, how)
    elif base == "find":
        _find(args, out, depth, how)
    elif _PYTHON.match(base):
        _python(args, out, depth, how)
    elif base in _NODE:
        _script(args, _NODE_VALUED, out, depth, how, "node")


def _wrapped(base: str, args: tuple[str, ...], out: list[Form], depth: int, how: str) -> None:
    """Each later position may be the program; an argument holding a command line is read as one."""
    note = f"{how}run by {base}; "
    tail = (MANY,) if base == "xargs" else ()
    if base == "trap" and args and not args[0].startswith("-"):
        if args[0] not in WILDCARDS:
            _line(args[0], out, depth + 1, note)
        return
    if base == "eval":
        if not any(a in WILDCARDS for a in args):
            _line(" ".join(args), out, depth + 1, note)
        return
    for k in range(min(len(args), SCAN_WINDOW)):
        word = args[k]
        if word in WILDCARDS:
            break  # a program chosen at run time: judged when it is executed
        if any(c in word for c in " \t\n;&|"):
            _line(word, out, depth + 1, note)
            rest = args[k + 1:]
            if rest and not any(a in WILDCARDS for a in rest):  # env -S 'git push' --force
                _line(word + " " + " ".join(shlex.quote(a) for a in rest), out, depth + 1, note)
        elif not word.startswith("-") and not _ASSIGNMENT.match(word):
            env = tuple(w for w in args[:k] if _ASSIGNMENT.match(w))
            _forms((*env, *args[k:], *tail), None, out, depth + 1, note)


def _shell(base: str, args: tuple[str, ...], out: list[Form], depth: int, how: str) -> None:
    """`sh -c STRING`: the string is a line of its own (options may come before or after -c)."""
    has_c = False
    k = 0
    while k < len(args):
        word = args[k]
        if word == "--":
            k += 1
            break
        if word in ("-o", "+o", "-O", "+O", "--rcfile", "--init-file"):
            k += 2
            continue
        if word.startswith(("-", "+")) and len(word) > 1 and word not in WILDCARDS:
            if word.startswith("-") and not word.startswith("--") and "c" in word[1:]:
                has_c = True
            k += 1
            continue
        break
    if has_c and k < len(args) and args[k] not in WILDCARDS:
        _line(args[k], out, depth + 1, f"{how}run by {base} -c; ")


def _find(args: tuple[str, ...], out: list[Form], depth: int, how: str) -> None:
    k = 0
    while k < len(args):
        if args[k] in ("-exec", "-execdir", "-ok", "-okdir"):
            end = k + 1
            while end < len(args) and args[end] not in (";", "+"):
                end += 1
            cmd = tuple(ONE if w == "{}" else w for w in args[k + 1:end])
            _forms(cmd, None, out, depth + 1, f"{how}run by find {args[k]}; ")
            k = end
        k += 1


def _python(args: tuple[str, ...], out: list[Form], depth: int, how: str) -> None:
    """`python -m twine upload` is twine; `python path/twine upload` too. `-c CODE` is not read."""
    k = 0
    while k < len(args):
        word = args[k]
        if word == "-m" or (word.startswith("-m") and not word.startswith("--")):
            module = args[k + 1] if word == "-m" and k + 1 < len(args) else word[2:]
            rest = args[k + 2:] if word == "-m" else args[k + 1:]
            if module in WILDCARDS:
                out.append(Form((MANY,), f"{how}python -m with a module chosen at run time"))
                return
            name = module.split(".")[0]
            _forms((name, *rest), None, out, depth + 1, f"{how}python -m {module}; ")
            return
        if word in _PY_VALUED:
            k += 2
            continue
        if word.startswith("-") and word != "-":
            if word.startswith("-c") or (len(word) > 2 and "c" in word[1:] and not word.startswith("--")):
                return
            k += 1
            continue
        _script_named(word, args[k + 1:], out, depth, f"{how}python script; ")
        return


def _script(args: tuple[str, ...], valued: frozenset[str], out: list[Form], depth: int, how: str,
            interpreter: str) -> None:
    k = 0
    while k < len(args):
        word = args[k]
        if word in ("-e", "--eval", "-p", "--print"):
            return
        if word in valued:
            k += 2
            continue
        if word.startswith("-") and word != "-":
            k += 1
            continue
        _script_named(word, args[k + 1:], out, depth, f"{how}{interpreter} script; ")
        return


def _script_named(script: str, rest: tuple[str, ...], out: list[Form], depth: int, how: str) -> None:
    if script in WILDCARDS:
        out.append(Form((MANY,), f"{how}a script chosen at run time"))
        return
    base = _basename(script)
    stem = base.rsplit(".", 1)[0] if base.endswith((".js", ".cjs", ".mjs", ".py")) else base
    name = _TOOL_NAMES.get(base, stem)
    if name in _TOOLS or name in _WRAPPERS or name.startswith("git-"):
        _forms((name, *rest), None, out, depth + 1, how)


def _tool(name: str, args: tuple[str, ...], out: list[Form], depth: int, how: str, forks: int = 0,
          config0: tuple[str, ...] = ()) -> None:
    """Drop the tool's global options, resolve the subcommand, add the normalised form."""
    tool = _TOOLS[name]
    config: list[str] = list(config0)
    k = 0
    if tool.plus_first and args and args[0].startswith("+"):
        k = 1
    while k < len(args):
        word = args[k]
        if word in WILDCARDS:
            out.append(Form((name, MANY), f"{how}{name} with options chosen at run time"))
            return
        if word == "--":
            k += 1
            break
        if not word.startswith("-") or word == "-":
            break
        opt, eq, value = word.partition("=")
        if eq and opt in tool.valued:
            config.append(f"{opt}={value}")
            k += 1
        elif word in tool.valued:
            config.append(f"{word}={args[k + 1] if k + 1 < len(args) else ''}")
            k += 2
        elif not word.startswith("--") and word[:2] in tool.valued:
            config.append(f"{word[:2]}={word[2:]}")
            k += 1
        elif word in tool.flags or (eq and opt in tool.flags):
            k += 1
        else:
            # an option this table does not know: it may take the next word as its value or not
            if k + 1 < len(args) and not eq and not args[k + 1].startswith("-") and forks < 3:
                _tool(name, args[k + 2:], out, depth, f"{how}{word} {args[k + 1]} read as an option; ",
                      forks + 1, tuple(config))
            k += 1
    if k >= len(args):
        out.append(Form((name,), f"{how}{name} without a subcommand"))
        return
    sub, rest = args[k], args[k + 1:]
    if sub in WILDCARDS:
        out.append(Form((name, MANY), f"{how}{name} subcommand chosen at run time"))
        return
    alias = _inline_alias(name, sub, config)
    if alias is not None:
        note = f"{how}{name} alias {sub}={alias}; "
        if depth > MAX_DEPTH:
            out.append(Form((name, MANY), note))
        elif alias.startswith("!"):
            _line(alias[1:] + " " + " ".join(shlex.quote(a) for a in rest if a not in WILDCARDS)
                  + (" \"$@\"" if any(a in WILDCARDS for a in rest) else ""), out, depth + 1, note)
        else:
            try:
                expanded = tuple(shlex.split(alias))
            except ValueError:
                out.append(Form((name, MANY), note + "unreadable"))
                return
            _tool(name, (*expanded, *rest), out, depth + 1, note, config0=tuple(config))
        return
    renamed = tool.rename.get(sub)
    words = (name, *(renamed or (sub,)), *rest)
    known = _git_knows(sub) if name == "git" else (tool.subcommands is None or sub in tool.subcommands)
    if not known:
        # an alias from a config file, or a plugin: it may be any subcommand
        out.append(Form((name, MANY), f"{how}{name} {sub} is not a known subcommand (an alias?)"))
    if sub in tool.uncertain or (name == "git" and _changes_push(config)):
        words = (*words, MANY)
        how = f"{how}{name} {sub}: what it does is not all in argv; "
    out.append(Form(words, how + "normalised"))
    launches = _LAUNCH_SUBCOMMANDS.get(name, frozenset())
    if sub in launches or (renamed and renamed[0] in launches):
        _wrapped(f"{name} {sub}", rest, out, depth, how)
    if name == "yarn" and sub in ("workspace",) and len(rest) > 1:
        _tool("yarn", rest[1:], out, depth + 1, f"{how}yarn workspace {rest[0]}; ")
    if name == "yarn" and sub == "workspaces":
        _wrapped("yarn workspaces", rest, out, depth, how)


def _inline_alias(name: str, sub: str, config: Iterable[str]) -> str | None:
    """An alias given on the command line (`git -c alias.p=push p`, `cargo --config alias.p="publish" p`);
    the last definition wins, as in the tools."""
    found = None
    for item in config:
        opt, _, setting = item.partition("=")
        if name == "git" and opt == "-c":
            key, _, value = setting.partition("=")
            if key.lower() == f"alias.{sub.lower()}":
                found = value
        elif name == "cargo" and opt == "--config":
            key, _, value = setting.partition("=")
            if key.strip() == f"alias.{sub}":
                found = value.strip().strip("\"'")
    return found


def _changes_push(config: Iterable[str]) -> bool:
    """Inline config that can make a push force: a `+` refspec or mirroring for a remote, a config file
    included, or values this argv does not show (--config-env, GIT_CONFIG_* variables, another exec path)."""
    for item in config:
        opt, _, setting = item.partition("=")
        if opt == "--config-env" or (opt == "-c" and _FORCING_SETTING.match(setting)):
            return True
        if opt == "env" and setting.startswith(("GIT_CONFIG", "GIT_EXEC_PATH")):
            return True
    return False
