"""A realistic engineer's home for the tests that attack or drive `guard run`.

Synthetic worlds hid escapes: the workspace was not under HOME, git was not in use, no tmux, ssh-agent or
credential helper ran, no toolchain lived under HOME and no credential sat in the environment. This module
builds the world an engineer actually has, with fake values only:

- HOME with dotfiles (`.gitconfig`, `.bashrc`, `.profile`, `.viminfo`), credential files (`~/.ssh`, `~/.aws`,
  `~/.netrc`, `~/.git-credentials`, `~/.config/gh/hosts.yml`, `~/.docker/config.json`, `~/.npmrc`,
  `~/.cache/huggingface/token`, a Kerberos ticket cache under /tmp) and caches;
- the workspace at `~/src/proj`, an existing git repository with a commit, a submodule and a linked
  worktree (`~/src/proj-feature`), and hooks of its own;
- toolchain entry points under `~/.local/bin` that are symlinks into caches (`ruff` into uv's tool
  directory), as pipx, uv and npm lay them out;
- credentials in the environment (`AWS_SECRET_ACCESS_KEY`, `GH_TOKEN`, `NPM_TOKEN`, ...);
- on request (`Services`), the services an engineer runs: a tmux server on a custom socket, git's
  credential-cache daemon holding a fake token, an ssh-agent holding a fake key when the tools exist.

Every secret is random per world so a leak is unambiguous (`RealHome.secrets`), and every process started
here is tracked by pid and ended by pid: nothing aims at anything this module did not create.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
_GIT_ENV = {"GIT_AUTHOR_NAME": "Eng", "GIT_AUTHOR_EMAIL": "eng@example.invalid",
            "GIT_COMMITTER_NAME": "Eng", "GIT_COMMITTER_EMAIL": "eng@example.invalid",
            "GIT_CONFIG_NOSYSTEM": "1"}


def _token(prefix: str) -> str:
    return f"FAKE-{prefix}-{secrets.token_hex(12)}"


@dataclass
class RealHome:
    """The files of a realistic home under `root`; `secrets` maps a name to the fake value planted."""

    root: Path
    home: Path = field(init=False)
    ws: Path = field(init=False)
    worktree: Path = field(init=False)
    submodule_origin: Path = field(init=False)
    remote: Path = field(init=False)
    secrets: dict[str, str] = field(default_factory=dict)
    env_credentials: dict[str, str] = field(default_factory=dict)
    tool_link: Path = field(init=False)
    tool_target: Path = field(init=False)
    krb5_cache: Path = field(init=False)

    def __post_init__(self) -> None:
        self.home = self.root / "home"
        self.ws = self.home / "src" / "proj"
        self.worktree = self.home / "src" / "proj-feature"
        self.submodule_origin = self.home / "src" / "lib-origin"
        self.remote = self.root / "remote.git"  # a bare "origin" outside the home, as a server would be

    # -- files -------------------------------------------------------------------------------------------

    def build(self) -> RealHome:
        h = self.home
        for d in (h, h / ".ssh", h / ".aws", h / ".config" / "gh", h / ".docker", h / ".cache" / "pip",
                  h / ".cache" / "huggingface", h / ".local" / "bin", h / "src"):
            d.mkdir(parents=True, exist_ok=True)
        (h / ".ssh").chmod(0o700)
        self._secret_file(h / ".ssh" / "id_ed25519", "ssh_key",
                          "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n")
        (h / ".ssh" / "known_hosts").write_text("git.example.invalid ssh-ed25519 AAAAC3NzaFAKE\n")
        self._secret_file(h / ".aws" / "credentials", "aws",
                          "[default]\naws_access_key_id = AKIAFAKE\naws_secret_access_key = {}\n")
        self._secret_file(h / ".netrc", "netrc", "machine git.example.invalid login eng password {}\n")
        self._secret_file(h / ".git-credentials", "git_credentials", "https://eng:{}@git.example.invalid\n")
        self._secret_file(h / ".config" / "gh" / "hosts.yml", "gh_hosts",
                          "github.com:\n    oauth_token: {}\n    user: eng\n")
        self._secret_file(h / ".docker" / "config.json", "docker", '{{"auths": {{"r.example.invalid": '
                          '{{"auth": "{}"}}}}}}\n')
        self._secret_file(h / ".npmrc", "npmrc", "//registry.example.invalid/:_authToken={}\n")
        self._secret_file(h / ".cache" / "huggingface" / "token", "hf_token", "{}\n")
        self.krb5_cache = self.root / f"krb5cc_{os.getuid()}_{secrets.token_hex(3)}"
        self._secret_file(self.krb5_cache, "krb5", "KRB5-CCACHE {}\n")
        (h / ".gitconfig").write_text("[user]\n\tname = Eng\n\temail = eng@example.invalid\n"
                                      "[init]\n\tdefaultBranch = main\n"
                                      "[protocol \"file\"]\n\tallow = always\n")
        (h / ".bashrc").write_text("# the engineer's own rc\nexport EDITOR=vi\n")
        (h / ".profile").write_text("# the engineer's login profile\n")
        (h / ".viminfo").write_text("# viminfo\n")
        self._toolchain()
        self._repositories()
        self.env_credentials = {
            "AWS_SECRET_ACCESS_KEY": _token("AWSENV"), "GH_TOKEN": _token("GHENV"),
            "NPM_TOKEN": _token("NPMENV"), "OPENAI_API_KEY": _token("OPENAIENV"),
            "KRB5CCNAME": f"FILE:{self.krb5_cache}",
        }
        return self

    def _secret_file(self, path: Path, name: str, template: str) -> None:
        value = _token(name.upper())
        self.secrets[name] = value
        path.write_text(template.format(value))
        path.chmod(0o600)

    def _toolchain(self) -> None:
        """`~/.local/bin/ruff` -> uv's tool directory, the way `uv tool install` lays it out."""
        tool_dir = self.home / ".local" / "share" / "uv" / "tools" / "ruff" / "bin"
        tool_dir.mkdir(parents=True)
        self.tool_target = tool_dir / "ruff"
        self.tool_target.write_text("#!/bin/sh\necho ruff-0.0-fake\n")
        self.tool_target.chmod(0o755)
        self.tool_link = self.home / ".local" / "bin" / "ruff"
        self.tool_link.symlink_to(self.tool_target)

    def git(self, *args: str, cwd: Path | None = None) -> str:
        env = {"HOME": str(self.home), "PATH": SYSTEM_PATH, **_GIT_ENV}
        return subprocess.run(["git", *args], cwd=cwd or self.ws, env=env, check=True, capture_output=True,
                              text=True, timeout=60).stdout

    def _repositories(self) -> None:
        """~/src/proj: a repository with a commit, a submodule and a linked worktree, pushed to a bare remote."""
        self.submodule_origin.mkdir(parents=True)
        self.git("init", "-q", cwd=self.submodule_origin)
        (self.submodule_origin / "lib.py").write_text("VALUE = 1\n")
        self.git("add", "-A", cwd=self.submodule_origin)
        self.git("commit", "-q", "-m", "lib", cwd=self.submodule_origin)

        self.ws.mkdir(parents=True)
        self.git("init", "-q")
        (self.ws / "README.md").write_text("# proj\n")
        (self.ws / "app.py").write_text("print('hello from proj')\n")
        (self.ws / "test_app.py").write_text("def test_ok():\n    assert 1 + 1 == 2\n")
        self.git("add", "-A")
        self.git("commit", "-q", "-m", "initial")
        self.git("-c", "protocol.file.allow=always", "submodule", "add", "-q", str(self.submodule_origin),
                 "vendor/lib")
        self.git("commit", "-q", "-m", "vendor lib as a submodule")
        self.git("worktree", "add", "-q", str(self.worktree), "-b", "feature")
        hooks = self.ws / ".git" / "hooks"
        hooks.mkdir(exist_ok=True)
        (hooks / "pre-commit").write_text("#!/bin/sh\nexit 0\n")
        (hooks / "pre-commit").chmod(0o755)
        subprocess.run(["git", "init", "-q", "--bare", str(self.remote)], check=True, timeout=60,
                       env={"PATH": SYSTEM_PATH, "HOME": str(self.home)})
        self.git("remote", "add", "origin", str(self.remote))
        self.git("push", "-q", "origin", "main")


@dataclass
class Services:
    """The services an engineer runs, each started here, tracked by pid and stopped by pid.

    `sockets` maps a service to the path of its unix socket; a service whose tool is missing is absent,
    with the reason in `missing` (tests that need it skip with that reason).
    """

    home: RealHome
    sockets: dict[str, Path] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    pids: list[int] = field(default_factory=list)

    def start(self) -> Services:
        self._tmux()
        self._credential_cache()
        self._ssh_agent()
        return self

    def _base_env(self) -> dict[str, str]:
        # SHELL: an engineer has a login shell; `nobody`'s passwd entry says nologin, and tmux's session
        # would end at once (the server exits with it)
        return {"HOME": str(self.home.home), "PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "SHELL": "/bin/sh"}

    def _tmux(self) -> None:
        if shutil.which("tmux") is None:
            self.missing["tmux"] = "tmux is not installed"
            return
        sock = self.home.root / f"tmux-{secrets.token_hex(3)}.sock"
        subprocess.run(["tmux", "-S", str(sock), "new-session", "-d", "-s", "eng", "-x", "80", "-y", "24"],
                       env=self._base_env(), check=True, timeout=30)
        pid = subprocess.run(["tmux", "-S", str(sock), "display-message", "-p", "#{pid}"],
                             env=self._base_env(), check=True, capture_output=True, text=True,
                             timeout=30).stdout.strip()
        self.pids.append(int(pid))
        self.sockets["tmux"] = sock
        self.env["TMUX"] = f"{sock},{pid},0"

    def _credential_cache(self) -> None:
        helper = Path("/usr/lib/git-core/git-credential-cache")
        if not helper.exists():
            self.missing["credential-cache"] = "git-credential-cache is not installed"
            return
        sock_dir = self.home.home / ".cache" / "git" / "credential"
        sock_dir.mkdir(parents=True, exist_ok=True)
        sock_dir.chmod(0o700)
        sock = sock_dir / "socket"
        token = _token("CREDCACHE")
        self.home.secrets["credential_cache"] = token
        subprocess.run(["git", "credential-cache", f"--socket={sock}", "--timeout=3600", "store"],
                       input=f"protocol=https\nhost=git.example.invalid\nusername=eng\npassword={token}\n\n",
                       env=self._base_env(), text=True, check=True, timeout=30)
        _wait(sock.exists)
        for pid in _pids_with(str(sock).encode()):
            self.pids.append(pid)
        self.sockets["credential-cache"] = sock

    def _ssh_agent(self) -> None:
        if shutil.which("ssh-agent") is None or shutil.which("ssh-keygen") is None:
            self.missing["ssh-agent"] = "openssh-client (ssh-agent, ssh-keygen) is not installed"
            return
        sock = self.home.root / f"agent-{secrets.token_hex(3)}.sock"
        proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], env=self._base_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pids.append(proc.pid)
        _wait(sock.exists)
        key = self.home.root / f"agent-key-{secrets.token_hex(3)}"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "guard-test", "-f", str(key)],
                       check=True, timeout=30, env=self._base_env())
        subprocess.run(["ssh-add", "-q", str(key)], env={**self._base_env(), "SSH_AUTH_SOCK": str(sock)},
                       check=True, timeout=30, capture_output=True)
        self.sockets["ssh-agent"] = sock
        self.env["SSH_AUTH_SOCK"] = str(sock)

    def stop(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        self.pids.clear()


def _wait(predicate: object, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def _pids_with(token: bytes) -> list[int]:
    """Processes whose command line holds `token` (the daemons a tool forked for this world only)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as f:
                if token in f.read():
                    found.append(int(entry))
    return found


@contextlib.contextmanager
def running_services(home: RealHome) -> Iterator[Services]:
    services = Services(home)
    try:
        yield services.start()
    finally:
        services.stop()
