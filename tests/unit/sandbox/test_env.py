"""The agent's environment (guard.sandbox.env): credentials and socket variables withheld, by name and value."""

from __future__ import annotations

from guard.sandbox.env import agent_env, classify, named_files

BASE = {
    "PATH": "/usr/bin:/bin", "HOME": "/home/u", "LANG": "C.UTF-8", "TERM": "xterm-256color", "EDITOR": "vi",
    "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": "/w", "XDG_SESSION_TYPE": "tty",
    "GH_TOKEN": "gho_x", "GITHUB_TOKEN": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_PROFILE": "dev",
    "NPM_TOKEN": "z", "HF_TOKEN": "hf_x", "VAULT_ADDR": "https://v", "DB_PASSWORD": "p", "STRIPE_API_KEY": "k",
    "MY_SECRET_THING": "s", "KRB5CCNAME": "FILE:/tmp/krb5cc_1000", "KUBECONFIG": "/home/u/.kube/a:/etc/kube/b",
    "GOOGLE_APPLICATION_CREDENTIALS": "/home/u/key.json",
    "DATABASE_URL": "postgres://app:hunter2@db/x", "INNOCENT_LOOKING": "ghp_abcdef", "JWT": "eyJhbGciOiJIUzI1NiJ9",
    "ANTHROPIC_API_KEY": "sk-ant-x", "OPENAI_API_KEY": "sk-x",
    "SSH_AUTH_SOCK": "/tmp/ssh-x/agent.1", "TMUX": "/tmp/tmux-1000/default,1,0", "TMUX_PANE": "%1", "STY": "1.x",
    "ZELLIJ_SESSION_NAME": "z", "NVIM": "/run/user/1000/nvim.1.0", "KITTY_LISTEN_ON": "unix:/tmp/k",
    "DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1000/bus", "DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0",
    "XDG_RUNTIME_DIR": "/run/user/1000", "GUARD_HOME": "/home/u/.local/state/guard",
}
KEPT = {"PATH", "HOME", "LANG", "TERM", "EDITOR", "TOKENIZERS_PARALLELISM", "PYTHONPATH", "XDG_SESSION_TYPE"}


def test_only_ordinary_variables_pass_by_default() -> None:
    env, withheld = agent_env(BASE)
    assert set(env) == KEPT
    assert {w.name for w in withheld} == set(BASE) - KEPT
    assert all(w.why for w in withheld)


def test_pass_env_lets_named_credentials_through_but_never_sockets() -> None:
    env, _ = agent_env(BASE, pass_env=["ANTHROPIC_API_KEY", "AWS_*", "SSH_AUTH_SOCK", "TMUX", "GUARD_HOME"])
    assert env["ANTHROPIC_API_KEY"] == "sk-ant-x" and env["AWS_PROFILE"] == "dev"
    assert "OPENAI_API_KEY" not in env
    assert not {"SSH_AUTH_SOCK", "TMUX", "GUARD_HOME"} & set(env)


def test_extra_is_added_last() -> None:
    env, _ = agent_env(BASE, extra={"HTTPS_PROXY": "http://127.0.0.1:3128", "PATH": "/x"})
    assert env["HTTPS_PROXY"] == "http://127.0.0.1:3128" and env["PATH"] == "/x"


def test_values_are_judged_too() -> None:
    assert classify("PIP_INDEX_URL", "https://user:tok@pkgs.example/simple") is not None
    assert classify("PIP_INDEX_URL", "https://pkgs.example/simple") is None
    assert classify("SOMETHING", "AKIAABCDEFGHIJKLMNOP") is not None
    assert classify("LS_COLORS", "rs=0:di=01;34") is None


def test_files_named_by_withheld_credential_variables() -> None:
    _, withheld = agent_env(BASE)
    files = set(named_files(withheld, BASE))
    assert files == {"/tmp/krb5cc_1000", "/home/u/.kube/a", "/etc/kube/b", "/home/u/key.json"}


def test_pattern_tables_match_as_fnmatch_does_pattern_by_pattern() -> None:
    """The tables are matched as one compiled expression; the answer is fnmatch's, pattern by pattern, on
    names built from every pattern's pieces (each literal, each with text around it) and near misses."""
    import fnmatch

    from guard.sandbox.env import CREDENTIAL_NAMES, SOCKET_NAMES, _matches

    for table in (CREDENTIAL_NAMES, SOCKET_NAMES, ("A?C", "[XY]Z*", "*"), ("**", "A*B*C", "Q*R", ""), ()):
        names = {"", "X", "path", "HOME", "my_token", "AWS", "aws_x", "GH", "gh_", "TMUX2", "_TMUX"}
        for pattern in table:
            bare = pattern.replace("*", "")
            names.update({bare, bare.lower(), f"X{bare}", f"{bare}X", f"X_{bare}_Y", bare[:-1], bare[1:],
                          pattern.replace("*", "MID"), pattern.replace("*", "")})
        for name in names:
            expected = any(fnmatch.fnmatchcase(name.upper(), p.upper()) for p in table)
            assert _matches(name, table) is expected, (name, table)
