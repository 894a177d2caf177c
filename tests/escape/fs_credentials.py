"""Credentials by value and by reference: variables, token files and caches, sockets named in the environment.

The realistic home holds credential files (`~/.netrc`, `~/.git-credentials`, `~/.config/gh/hosts.yml`,
`~/.docker/config.json`, `~/.npmrc`, `~/.cache/huggingface/token`, a Kerberos ticket cache named by
KRB5CCNAME) and credentials in the environment (`AWS_SECRET_ACCESS_KEY`, `GH_TOKEN`, `NPM_TOKEN`). Each
attack prints them bare first, then must print none of them under `guard run`.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

pytestmark = pytest.mark.timeout(120)


def _leaked(run, values) -> list[str]:
    return [v for v in values if v in run.stdout or v in run.stderr]


def test_credential_variables_are_withheld(world):
    creds = world.real.env_credentials
    extra = {**creds, "VAULT_TOKEN": "FAKE-VAULT-" + world.ssh_secret[-6:],
             "DATABASE_URL": "postgres://eng:FAKE-DBPASS-" + world.ssh_secret[-6:] + "@db.example.invalid/x",
             "MY_SERVICE_PASSWORD": "FAKE-PW-" + world.ssh_secret[-6:], "AWS_REGION": "eu-west-1"}
    secret_values = [v for k, v in extra.items() if k not in ("OPENAI_API_KEY", "AWS_REGION", "KRB5CCNAME")]
    attack = world.sh("env")
    bare = world.bare_run(attack, env=extra)
    assert len(_leaked(bare, secret_values)) == len(secret_values), bare
    run = world.guard_run(attack, env=extra)
    assert run.returncode == 0, run
    assert _leaked(run, secret_values) == [], run
    names = {line.split("=", 1)[0] for line in run.stdout.splitlines() if "=" in line}
    assert not names & {"AWS_SECRET_ACCESS_KEY", "GH_TOKEN", "NPM_TOKEN", "KRB5CCNAME", "VAULT_TOKEN",
                        "DATABASE_URL", "MY_SERVICE_PASSWORD", "AWS_REGION"}, names
    # the agent's own model key passes: coding-agent's settings.pass_env names it
    assert creds["OPENAI_API_KEY"] in run.stdout, run


def test_token_files_and_caches_are_hidden(world):
    real = world.real
    files = [real.home / ".netrc", real.home / ".git-credentials", real.home / ".config" / "gh" / "hosts.yml",
             real.home / ".docker" / "config.json", real.home / ".npmrc",
             real.home / ".cache" / "huggingface" / "token", real.krb5_cache]
    names = ("netrc", "git_credentials", "gh_hosts", "docker", "npmrc", "hf_token", "krb5")
    values = [real.secrets[n] for n in names]
    attack = world.sh(" ; ".join(f'cat "{f}"' for f in files) + "; true")
    bare = world.bare_run(attack)
    assert len(_leaked(bare, values)) == len(values), bare
    run = world.guard_run(attack, env={"KRB5CCNAME": real.env_credentials["KRB5CCNAME"]})
    assert _leaked(run, values) == [], run


def test_ticket_cache_named_by_a_variable_is_hidden_wherever_it_lies(world):
    """The Kerberos cache lies outside any credential pattern (not /tmp/krb5cc_*): KRB5CCNAME names it,
    and a file a withheld credential variable names is hidden like a credential."""
    real = world.real
    attack = world.sh(f'cat "{real.krb5_cache}"')
    assert real.secrets["krb5"] in world.bare_run(attack).stdout
    run = world.guard_run(attack, env={"KRB5CCNAME": real.env_credentials["KRB5CCNAME"]})
    assert real.secrets["krb5"] not in run.stdout, run


def test_masked_npmrc_is_refused_and_npm_still_runs(world):
    """~/.npmrc holds a token and the registry settings. Inside a granted tree a masked file reads as an
    empty file; ~/.npmrc lies outside every grant, so it is refused (ENOENT here, where the home is
    carved out of /tmp; EACCES from Landlock elsewhere), and npm, which skips a user config it cannot
    read, runs with its defaults."""
    run = world.guard_run(world.sh(f'cat "{world.home}/.npmrc"; echo "rc=$?"'))
    assert "rc=1" in run.stdout and world.real.secrets["npmrc"] not in run.stdout, run
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed")
    bare = world.bare_run(["npm", "config", "get", "registry"])
    assert bare.returncode == 0, bare
    npm = world.guard_run(["npm", "config", "get", "registry"])
    assert npm.returncode == 0 and "registry" in npm.stdout, npm


def test_variables_naming_sockets_and_terminals_are_withheld(world):
    """TMUX hands over the engineer's shells (send-keys), SSH_AUTH_SOCK every loaded key; the variables
    of editors, terminal emulators and session buses likewise point outside the sandbox."""
    fake = {"NVIM": "/tmp/nvim.eng/0", "NVIM_LISTEN_ADDRESS": "/tmp/nvimsock", "KITTY_LISTEN_ON": "unix:/tmp/k",
            "ZELLIJ": "0", "ZELLIJ_SESSION_NAME": "eng", "STY": "1234.pts-0.host", "TMUX_PANE": "%0",
            "DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1000/bus", "WAYLAND_DISPLAY": "wayland-0",
            "DISPLAY": ":0", "VSCODE_IPC_HOOK_CLI": "/tmp/vscode-ipc-x.sock", "SSH_AUTH_SOCK": "/tmp/agent.1"}
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    sock = world.root / "tmux-eng.sock"
    base = {"HOME": str(world.home), "PATH": world.env["PATH"], "SHELL": "/bin/sh"}
    # SHELL: tmux runs the command through it, and uid nobody's login shell (nologin) would end it at once
    subprocess.run(["tmux", "-S", str(sock), "new-session", "-d", "-s", "eng", "sleep 600"], env=base,
                   check=True, timeout=30)
    pid = subprocess.run(["tmux", "-S", str(sock), "display-message", "-p", "#{pid}"], env=base, check=True,
                         capture_output=True, text=True, timeout=30).stdout.strip()
    world.track(int(pid))
    env = {"TMUX": f"{sock},{pid},0", **fake}
    attack = world.sh('env; tmux list-sessions -F "SESSION=#{session_name}"')
    bare = world.bare_run(attack, env=env)
    assert "SESSION=eng" in bare.stdout, bare
    run = world.guard_run(attack, env=env)
    assert "SESSION=eng" not in run.stdout, run
    names = {line.split("=", 1)[0] for line in run.stdout.splitlines() if "=" in line}
    assert not names & ({"TMUX"} | set(fake)), names


def test_zz_trail_verifies(world):
    world.check_trail()
