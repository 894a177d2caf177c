"""Commands are judged the way their tools read them: the evasions of issue 13 class 7, as a table.

Every publishing tool of the shipped coding-agent policy, with its global options placed before the
subcommand, through its helper paths and multi-call names, behind every wrapper, and under another
argv[0] (an exec whose resolved executable is the tool) must get at least the verdict the policy gives the
plain command; honest work next to them must stay allowed.
"""

from __future__ import annotations

import shlex

import pytest

from guard.model import Action, Op, Verdict
from guard.policy import Policy, load_policy

from .helpers import HOME, WS
from .snapshot import codex_snapshot

ASK, DENY, ALLOW = Verdict.ASK, Verdict.DENY, Verdict.ALLOW


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy("coding-agent", workspace=WS, home=HOME, env={})


def verdict(policy: Policy, line: str) -> Verdict:
    return policy.decide_uncached(Action(Op.RUN, line)).verdict


def exec_verdict(policy: Policy, argv: tuple[str, ...], exe: str) -> Verdict:
    action = Action(Op.RUN, shlex.join(argv), argv=argv, exe=exe)
    decided = policy.decide(action)
    assert decided == policy.decide_uncached(action)
    return decided.verdict


# (plain command, its verdict, the same command spelled the ways its tool also reads it)
PUBLISHING: list[tuple[str, Verdict, list[str]]] = [
    ("git push origin main", ASK, [
        "git -C . push origin main", "git -c user.name=x push origin main", "git --git-dir=.git push origin main",
        "git --git-dir .git --work-tree . push origin main", "git --namespace n push origin main",
        "git -P push origin main", "git --no-pager --bare push origin main", "git --exec-path=/x push origin main",
        "git --no-optional-locks -C a -C b push origin main", "git --literal-pathspecs push origin main",
        "/usr/lib/git-core/git-push origin main", "git-push origin main", "/usr/bin/git push origin main",
        "git send-pack origin main", "git http-push origin main", "git -c alias.p=push p origin main",
        "git -c Alias.P=push P origin main", "git -c 'alias.p=!git push' p origin main",
        "git -c alias.p=push -c alias.q=p q origin main",
    ]),
    ("git push --force origin main", DENY, [
        "git -C . push --force origin main", "git -c x.y=z push -f", "git --git-dir=.git push origin +main",
        "/usr/lib/git-core/git-push --force", "git-push -f", "git send-pack --force origin main",
        "git -c alias.p=push p --force", "git -c alias.pf='push --force' pf", "git -c 'alias.pf=!git push -f' pf",
        "git -c remote.origin.mirror=true push origin", "git -c remote.origin.push=+main:main push",
        "git -c include.path=/tmp/x push", "git --config-env=remote.origin.push=X push",
        "git -c includeIf.onbranch:main.path=/tmp/x push", "git -c remote.origin.mirror=1 push",
        "git receive-pack /tmp/bare.git", "git-receive-pack /tmp/bare.git", "git push $FLAGS",
        "git push origin \"$BRANCH\"", "git push origin *", "git $(echo push) origin", "git st",
        "GIT_CONFIG_PARAMETERS=x git push", "GIT_CONFIG_COUNT=1 git push origin main",
        "env -S 'git push' --force", "env GIT_CONFIG_GLOBAL=/tmp/c git push", "FOO=$X git push -f",
        "A=(1 2) B=\"$(id)\" git push -f",
    ]),
    ("npm publish", ASK, [
        "npm --prefix . publish", "npm -C . publish", "npm --workspace a publish", "npm -w a publish",
        "npm --loglevel silly publish", "npm --some-new-flag value publish", "npm --some-new-flag publish",
        "npm -g --dry-run publish", "node /usr/lib/node_modules/npm/bin/npm-cli.js publish",
        "node --no-warnings /opt/npm/bin/npm-cli.js --prefix . publish", "npx npm publish",
        "npx -y npm@10 publish", "npm exec -- npm publish", "npm x npm publish", "corepack npm publish",
    ]),
    ("pnpm publish", ASK, ["pnpm -C . publish", "pnpm --filter a publish", "pnpm -r publish",
                           "node /x/pnpm/bin/pnpm.cjs publish", "pnpm dlx npm publish"]),
    ("yarn publish", ASK, ["yarn --cwd . publish", "node /x/yarn.js publish"]),
    ("yarn npm publish", ASK, ["yarn workspace a npm publish", "yarn workspaces foreach -A npm publish",
                               "yarn --cwd . npm publish"]),
    ("twine upload dist/x.whl", ASK, [
        "python -m twine upload dist/x.whl", "python3 -I -m twine upload dist/x.whl",
        "python3.12 -W ignore -m twine upload x", "python3 -mtwine upload x", "python3 /usr/bin/twine upload x",
        "python3 -m twine.__main__ upload x", "twine --no-color upload x", "uvx twine upload x",
        "uvx twine@5.0 upload x", "pipx run twine upload x", "uv tool run twine upload x",
        "uv run twine upload x", "uv run --with twine -- twine upload x", "poetry run twine upload x",
        "pdm run twine upload x", "hatch run twine upload x",
    ]),
    ("cargo publish", ASK, [
        "cargo --locked publish", "cargo +stable publish", "cargo -Z unstable-options publish",
        "cargo --config net.retry=2 publish", "cargo -v --offline publish", "cargo --color never publish",
        "cargo --config 'alias.p=\"publish\"' p", "rustup run stable cargo publish", "cargo t", "cargo b",
        "cargo some-plugin",
    ]),
    ("poetry publish", ASK, ["poetry -C . publish", "poetry --no-interaction publish", "python -m poetry publish"]),
    ("uv publish", ASK, ["uv --directory . publish", "uv -q publish", "python -m uv publish"]),
    ("gem push x.gem", ASK, ["gem --config-file c push x.gem"]),
    ("docker push img", ASK, ["docker --context c push img", "docker -H unix:///x push img",
                              "docker --tls push img", "docker image push img", "podman push img",
                              "podman --remote push img"]),
    ("gh release create v1", ASK, ["gh -R o/r release create v1", "gh --repo o/r release create v1",
                                   "gh release upload v1 x"]),
    ("gh pr merge 1", ASK, ["gh -R o/r pr merge 1", "gh api -X PUT repos/o/r/pulls/1/merge",
                            "gh api repos/o/r/releases -f tag_name=v1"]),
    ("sudo id", DENY, ["/usr/bin/sudo id", "env sudo id", "doas id"]),
]

WRAPPERS = [
    "env X=1 {}", "env -i {}", "env -u HOME -- {}", "/usr/bin/env -C . {}", "nice -n 5 {}", "nice -10 {}",
    "nohup {}", "timeout 10 {}", "timeout --kill-after=1 -s KILL 10 {}", "setsid -f {}", "stdbuf -oL {}",
    "time -p {}", "command {}", "exec {}", "exec -a whatever {}", "strace -f -o /dev/null {}",
    "flock /tmp/l {}", "ionice -c3 {}", "chrt -i 0 {}", "taskset -c 0 {}", "sh -c {q}", "bash -lc {q}",
    "bash -o pipefail -c {q}", "sh -c {q} sh", "dash -ec {q}", "su -c {q} me", "script -qc {q} /dev/null",
    "watch -n 1 {q}", "eval {q}", "trap {q} EXIT", "xargs {}", "find . -maxdepth 0 -exec {} ;", "make; {}",
    "true && {}", "false || {}", "echo $({})", "echo `{}`", "( {} )", "{{ {}; }}", "if true; then {}; fi",
    "f() {{ {}; }}; f", "alias x={q}\nx", "X=1 {}", "busybox {}", "{} | cat", "cat <<EOF\n$({})\nEOF",
    "echo 'x\n{}",  # an unterminated quote: the text is searched word by word
    "env -S {q}",
]


def _cases() -> list[tuple[str, Verdict]]:
    out = []
    for plain, expected, variants in PUBLISHING:
        out.append((plain, expected))
        out.extend((v, expected) for v in variants)
    return out


@pytest.mark.parametrize(("line", "expected"), _cases())
def test_every_spelling_of_a_publishing_command_gets_its_verdict(policy: Policy, line: str,
                                                                 expected: Verdict) -> None:
    got = verdict(policy, line)
    assert got.strength >= expected.strength, (line, policy.decide_uncached(Action(Op.RUN, line)))
    if expected is DENY or line.startswith(("sudo", "doas")):
        assert got is DENY


@pytest.mark.parametrize("wrapper", WRAPPERS)
@pytest.mark.parametrize(("command", "expected"), [
    ("git -C . push origin main", ASK), ("git -C . push --force", DENY), ("npm --prefix . publish", ASK),
    ("cargo --locked publish", ASK), ("python3 -m twine upload x", ASK), ("/usr/lib/git-core/git-push -f", DENY),
])
def test_wrappers_do_not_hide_the_command(policy: Policy, wrapper: str, command: str, expected: Verdict) -> None:
    line = wrapper.format(command, q=shlex.quote(command))
    got = verdict(policy, line)
    assert got.strength >= expected.strength, (line, policy.decide_uncached(Action(Op.RUN, line)))


@pytest.mark.parametrize(("argv", "exe", "expected"), [
    (("gitx", "push", "origin", "main"), "/usr/bin/git", ASK),  # exec -a gitx git push
    (("gitx", "-C", ".", "push", "--force"), "/usr/bin/git", DENY),
    (("git-push", "origin"), "/usr/lib/git-core/git", ASK),  # git reads its command from argv[0]
    (("/usr/lib/git-core/git-push", "--force"), "/usr/lib/git-core/git", DENY),  # the link, resolved
    (("anything", "publish"), "/usr/lib/node_modules/npm/bin/npm-cli.js", ASK),
    (("node", "/usr/lib/node_modules/npm/bin/npm-cli.js", "publish"), "/usr/bin/node", ASK),
    (("cargo", "--locked", "publish"), "/home/u/.cargo/bin/rustup", ASK),  # a rustup proxy: argv[0] decides
    (("python3", "-m", "twine", "upload", "x"), "/usr/bin/python3.12", ASK),
    (("sudo-by-another-name", "id"), "/usr/bin/sudo", DENY),
    (("git", "push", "ori", "[guard: argv truncated]"), "/usr/bin/git", DENY),  # the rest is unknown
    (("bash", "-lc", codex_snapshot("git push --force")), "/usr/bin/bash", DENY),
    (("bash", "-lc", codex_snapshot("gp origin")), "/usr/bin/bash", ASK),  # an alias from the snapshot
    (("bash", "-lc", codex_snapshot("pytest -q")), "/usr/bin/bash", ALLOW),
    (("git", "status"), "/usr/bin/git", ALLOW),
    (("git", "-C", "sub", "log", "--oneline"), "/usr/lib/git-core/git", ALLOW),
    (("git", "submodule--helper", "update"), "/usr/lib/git-core/git", ALLOW),  # git's own helpers
    (("git", "remote-https", "origin", "https://example.invalid/r"), "/usr/lib/git-core/git", ALLOW),
])
def test_an_exec_is_judged_by_argv_and_by_its_resolved_executable(policy: Policy, argv: tuple[str, ...],
                                                                 exe: str, expected: Verdict) -> None:
    assert exec_verdict(policy, argv, exe) is expected


HONEST = [
    "git status", "git -C sub status", "git log --oneline -5", "git commit -m 'x'", "git -c user.name=x commit -m y",
    "git add -A && git commit -m wip", "git -c push.autoSetupRemote=true -c remote.origin.mirror=false status", "git diff HEAD~1", "git lfs pull", "git fetch origin", "git clone https://x/y",
    "git submodule update --init", "git worktree add ../w", "git --no-pager log", "npm install", "npm ci",
    "npm --prefix . install", "npm run test", "npm test", "npx jest", "npx -y prettier --check .", "pnpm install",
    "yarn add left-pad", "cargo build", "cargo --locked test", "cargo +nightly build", "cargo clippy -- -D warnings",
    "pytest -q", "python -m pytest -q", "python3 -c 'print(1)'", "uv run pytest", "uv pip install x",
    "pip install -e .", "python3 -m pip install -r requirements.txt", "make && make test", "echo git push --force",
    "grep -rn 'git push' .", "docker build -t x .", "gh pr view 1", "gh api repos/o/r/pulls", "bash -lc 'cd x && pytest'",
    "env FOO=1 make", "timeout 60 pytest -x", "xargs -0 rm -f", "find . -name '*.pyc' -exec rm {} +",
    "for f in *.py; do python \"$f\"; done", "$PYTHON -m pytest", "\"$EDITOR\" file", "eval \"$(pyenv init -)\"",
    codex_snapshot("pytest -q"), codex_snapshot("git status && npm test"),
]


@pytest.mark.parametrize("line", HONEST)
def test_honest_work_stays_allowed(policy: Policy, line: str) -> None:
    assert verdict(policy, line) is ALLOW, policy.decide_uncached(Action(Op.RUN, line))


def test_the_reason_says_how_the_command_was_read(policy: Policy) -> None:
    d = policy.decide_uncached(Action(Op.RUN, "exec -a gitx git -C . push --force"))
    assert d.rule_id == "force-push" and "git push --force" in d.reason and "run by exec" in d.reason
    d = policy.decide_uncached(Action(Op.RUN, "git -c alias.p=push p origin"))
    assert d.rule_id == "publish" and "alias p=push" in d.reason
    d = policy.decide_uncached(Action(Op.RUN, "git st"))
    assert d.rule_id == "force-push" and "not a known subcommand" in d.reason


def test_a_codex_snapshot_is_judged_by_what_it_runs(policy: Policy) -> None:
    for command, expected in (("pytest -q", ALLOW), ("git push --force", DENY), ("npm --prefix . publish", ASK),
                              ("gpf_1 origin", DENY), ("please id", DENY)):
        line = shlex.join(["bash", "-lc", codex_snapshot(command)])
        assert len(line.split()) > 3000
        assert verdict(policy, line) is expected, command


@pytest.mark.parametrize(("line", "expected"), [
    ("f() { :; }; git push -f", DENY),  # a definition ends where its braces do
    ("f() { git push -f; }; trap f EXIT", DENY),  # a function run by trap, eval, command ...
    ("alias gp='git push'; trap 'gp -f' EXIT", DENY),
    ("f() { git push -f; }; command f", DENY),
    ("g() { f; }; f() { git push origin; }; g", ASK),  # through another function, defined later
    ("if true; then f() { git push -f; }; fi; f", DENY),
    ("cat <<EOF; git push -f\nbody\nEOF", DENY),  # the rest of the here-document's line runs
    ("case a in a) git push -f;; esac", DENY),
    ("for i in 1; do git push -f; done", DENY),
    ("hub push -f", DENY),
    ("coproc git push -f", DENY),
    ("g\\it pu''sh $'-f'", DENY),  # quoting inside words
    ("git push origin main \\\n--force", DENY),  # a line continuation
    ("git push origin main &>/dev/null --force", DENY),
    ("cat <<A <<B\nx\nA\ny\nB\ngit push -f", DENY),
    ("git $'\\x70ush' origin", DENY),  # an escape spells a word this reader does not decode
    ("x() { git push -f; }", ALLOW),  # defined, never run
    ("f() { git push -f; }; echo f", ALLOW),
])
def test_the_shell_reader_is_not_fooled_by_shell_syntax(policy: Policy, line: str, expected: Verdict) -> None:
    assert verdict(policy, line) is expected


def test_the_truncation_mark_is_the_supervisors() -> None:
    from guard.policy._tools import TRUNCATED
    from guard.sandbox.supervisor import TRUNCATED_MARK

    assert TRUNCATED == TRUNCATED_MARK


def test_inline_config_that_cannot_force_keeps_a_push_an_ask(policy: Policy) -> None:
    for line in ("git -c push.autoSetupRemote=true push origin main", "git -c remote.origin.mirror=false push",
                 "git -c remote.origin.push=refs/heads/main:refs/heads/main push", "GIT_DIR=.git git push"):
        assert verdict(policy, line) is ASK, line
