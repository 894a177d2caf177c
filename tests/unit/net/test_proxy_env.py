"""The agent's proxy environment keeps the user's loopback NO_PROXY entries and nothing that would bypass the
proxy into the sandbox's empty network namespace."""

from __future__ import annotations

import pytest

from guard.errors import UsageError
from guard.net.proxy_env import agent_proxy_env


def test_defaults() -> None:
    env = agent_proxy_env(3128)
    assert env["HTTP_PROXY"] == env["http_proxy"] == "http://127.0.0.1:3128"
    assert env["ALL_PROXY"] == "socks5h://127.0.0.1:3128"
    assert env["NO_PROXY"] == env["no_proxy"] == "localhost,127.0.0.1"


@pytest.mark.parametrize(("user", "kept"), [
    ("localhost,127.0.0.1", "localhost,127.0.0.1"),
    ("127.0.0.1:11434,.corp.example,10.0.0.0/8", "localhost,127.0.0.1,127.0.0.1:11434"),
    ("[::1]:8080, dev.localhost ,127.0.0.0/8", "localhost,127.0.0.1,[::1]:8080,dev.localhost,127.0.0.0/8"),
    ("*,example.com,192.168.1.1", "localhost,127.0.0.1"),
    ("", "localhost,127.0.0.1"),
])
def test_user_no_proxy_loopback_entries_are_kept(user: str, kept: str) -> None:
    assert agent_proxy_env(3128, user_no_proxy=user)["NO_PROXY"] == kept


def test_port_out_of_range() -> None:
    with pytest.raises(UsageError):
        agent_proxy_env(0)
