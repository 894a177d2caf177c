"""The environment the agent starts with: the caller's, minus what hands it a credential or a way out.

A key file can be masked, but a credential in a variable is handed over by value (`GH_TOKEN`,
`AWS_SECRET_ACCESS_KEY`), and a variable naming a socket hands over a capability by reference
(`SSH_AUTH_SOCK` signs with every loaded key, `TMUX` types into the engineer's shells, `NVIM` drives
their editor). So, by default, the agent does not see:

- credentials, by name (`*_TOKEN`, `*SECRET*`, `*PASSWORD*`, `*API_KEY*`, `AWS_*`, `VAULT_*`, ...) and by
  value (a URL with a password in it, a value starting like a well-known token: `ghp_`, `sk-`, `AKIA`,
  ...);
- variables that point at sockets and terminals outside the sandbox (agents, multiplexers, editors,
  terminal emulators' remote control, session buses, displays, container engines);
- the guard's own state (`GUARD_HOME`).

`settings.pass_env` names what the agent itself needs through (its model's API key: the shipped
coding-agent policy passes `ANTHROPIC_API_KEY`, `OPENAI_API_KEY` and `GEMINI_API_KEY`). Sockets and the
guard's own variables are never passed, whatever the policy says: no rule could make them reachable.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Names of credentials (upper-cased before matching). `*` is any run of characters.
CREDENTIAL_NAMES = (
    "*TOKEN", "*TOKEN_*", "*_TOKENS", "*SECRET*", "*PASSWORD*", "*PASSWD*", "*PASSPHRASE*", "*_PASS",
    "*API_KEY*", "*APIKEY*", "*ACCESS_KEY*", "*PRIVATE_KEY*", "*_KEY", "*_KEYS", "*CREDENTIAL*",
    "*_AUTH", "*_AUTH_*", "*AUTHTOKEN*", "*COOKIE*", "*_SESSION", "*_SESSION_ID", "*SIGNING*",
    "AWS_*", "AZURE_*", "ARM_CLIENT_*", "GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_AUTH_*", "VAULT_*",
    "GH_*", "GITHUB_TOKEN", "GITLAB_*", "NPM_TOKEN", "NODE_AUTH_TOKEN", "KRB5CCNAME", "KRB5_*",
    "KUBECONFIG", "DOCKER_AUTH_CONFIG", "DOCKER_CONFIG", "OP_SESSION_*", "PGPASSFILE", "TWINE_*",
    "PYPI_*", "CARGO_REGISTRY_TOKEN", "CARGO_REGISTRIES_*_TOKEN", "GNUPGHOME", "PASSWORD_STORE_*",
    "NETRC", "GIT_ASKPASS", "SSH_ASKPASS", "SUDO_ASKPASS",
)

# Variables that point at sockets, terminals or services outside the sandbox. Never passed.
SOCKET_NAMES = (
    "SSH_AUTH_SOCK", "SSH_AGENT_PID", "GPG_AGENT_INFO", "GNOME_KEYRING_CONTROL", "GNOME_KEYRING_PID",
    "TMUX", "TMUX_PANE", "TMUX_TMPDIR", "STY", "SCREENDIR", "ZELLIJ", "ZELLIJ_*", "NVIM",
    "NVIM_LISTEN_ADDRESS", "VIM_SERVERNAME", "EMACS_SERVER_FILE", "EMACS_SOCKET_NAME",
    "KITTY_LISTEN_ON", "KITTY_WINDOW_ID", "KITTY_PID", "WEZTERM_UNIX_SOCKET", "WEZTERM_PANE",
    "ALACRITTY_SOCKET", "ALACRITTY_WINDOW_ID", "VSCODE_IPC_HOOK*", "VSCODE_GIT_IPC_HANDLE",
    "VSCODE_GIT_ASKPASS_*", "GNOME_TERMINAL_SCREEN", "GNOME_TERMINAL_SERVICE", "KONSOLE_DBUS_*",
    "TERMINATOR_DBUS_*", "TILIX_ID", "DBUS_SESSION_BUS_ADDRESS", "DBUS_SYSTEM_BUS_ADDRESS",
    "DISPLAY", "WAYLAND_DISPLAY", "XAUTHORITY", "XDG_RUNTIME_DIR", "PULSE_SERVER", "PIPEWIRE_REMOTE",
    "DOCKER_HOST", "CONTAINER_HOST", "PODMAN_*", "BUILDKIT_HOST", "GUARD_HOME",
)

# Values that are credentials whatever their name: a URL carrying a password, well-known token shapes.
_URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:[^/\s@]+@", re.IGNORECASE)
_TOKEN_VALUE = re.compile(
    r"^(?:gh[pousr]_|github_pat_|glpat-|xox[abprs]-|sk-|sk_live_|rk_live_|AKIA|ASIA|hf_|npm_|pypi-|"
    r"AIza|ya29\.|eyJhbGciOi|-----BEGIN )")


@dataclass(frozen=True, slots=True)
class Withheld:
    """A variable kept from the agent, and why (names only: a value is never shown)."""

    name: str
    why: str


def _matches(name: str, patterns: Iterable[str]) -> bool:
    """fnmatch's `fnmatchcase(NAME, PATTERN)` for any of the (upper-cased) patterns."""
    table = tuple(patterns)
    return bool(table) and _Table.of(table).matches(name.upper())


class _Table:
    """A pattern table sorted by shape, so a name is judged with a few string operations: exact names, a
    `PREFIX*`, a `*SUFFIX`, a `*PART*`, and the rest (more stars, `?`, `[...]`) by fnmatch. Compiling
    ~100 patterns for fnmatch, one by one or as one expression, cost 2-12 ms of every launch."""

    _cache: dict[tuple[str, ...], _Table] = {}

    def __init__(self, patterns: tuple[str, ...]) -> None:
        exact, prefixes, suffixes, parts, other = set(), [], [], [], []
        for pattern in (p.upper() for p in patterns):
            inner = pattern.strip("*")
            if "?" in pattern or "[" in pattern or "*" in inner:
                other.append(pattern)
            elif pattern.startswith("*") and pattern.endswith("*") and len(pattern) > 1:
                parts.append(inner)
            elif pattern.startswith("*"):
                suffixes.append(inner)
            elif pattern.endswith("*"):
                prefixes.append(inner)
            else:
                exact.add(pattern)
        self._exact, self._prefixes, self._suffixes = frozenset(exact), tuple(prefixes), tuple(suffixes)
        self._parts, self._other = tuple(parts), tuple(other)

    @classmethod
    def of(cls, patterns: tuple[str, ...]) -> _Table:
        table = cls._cache.get(patterns)
        if table is None:
            table = cls._cache[patterns] = cls(patterns)
        return table

    def matches(self, upper: str) -> bool:
        return (upper in self._exact or upper.startswith(self._prefixes) or upper.endswith(self._suffixes)
                or any(part in upper for part in self._parts)
                or any(fnmatch.fnmatchcase(upper, pattern) for pattern in self._other))


def classify(name: str, value: str) -> str | None:
    """Why `name=value` is withheld by default (None: it is passed)."""
    if _matches(name, SOCKET_NAMES):
        return "points at a socket, terminal or service outside the sandbox"
    if _matches(name, CREDENTIAL_NAMES):
        return "named like a credential"
    if _URL_PASSWORD.search(value):
        return "a URL with a password in it"
    if _TOKEN_VALUE.match(value):
        return "a value shaped like a token or key"
    return None


def named_files(withheld: Iterable[Withheld], base: Mapping[str, str]) -> list[str]:
    """Absolute paths that withheld variables name (`KRB5CCNAME=FILE:/tmp/krb5cc_1000`,
    `GOOGLE_APPLICATION_CREDENTIALS=/path/key.json`, `KUBECONFIG=/a:/b`): the launch hides them too,
    since a credential handed over by reference is still a credential. Socket variables are not files."""
    out: list[str] = []
    for w in withheld:
        if _matches(w.name, SOCKET_NAMES):
            continue
        value = base.get(w.name, "")
        if "://" in value:
            continue  # a URL, not a file
        kind, sep, rest = value.partition(":")
        parts = [rest] if sep and kind in ("FILE", "DIR") else value.split(":")
        out.extend(p for p in parts if p.startswith("/") and "\n" not in p)
    return out


def agent_env(base: Mapping[str, str], *, pass_env: Iterable[str] = (),
              extra: Mapping[str, str] | None = None) -> tuple[dict[str, str], list[Withheld]]:
    """(the agent's environment, what was withheld). `pass_env` lets credential-like variables through
    by name or pattern (never socket variables); `extra` is added last (proxy settings, markers)."""
    passing = tuple(pass_env)
    env: dict[str, str] = {}
    withheld: list[Withheld] = []
    for name, value in base.items():
        why = classify(name, value)
        if why is not None and (_matches(name, SOCKET_NAMES) or not _matches(name, passing)):
            withheld.append(Withheld(name, why))
            continue
        env[name] = value
    env.update(extra or {})
    return env, withheld
