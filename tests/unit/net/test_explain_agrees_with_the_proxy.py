"""`guard policy explain ... "connect H:P"` and the real proxy answer alike, because they run one code path.

Each destination is explained, then asked of a real proxy serving a real loopback echo server with the same
policy; the answers must agree. `localhost` is the case that once disagreed: the rules allow it (inside the
sandbox it is the sandbox's own loopback), the proxy refuses the host's loopback, and explain now leads
with what the proxy does.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from click.testing import CliRunner

from guard.cli.main import main
from guard.net import Proxy
from guard.net.explain import explain_connect
from guard.net.grants import policy_cidr_grant
from guard.policy import load_policy


async def _through_the_proxy(policy: Any, kit: Any, target: str) -> int:
    async def decide(action):  # type: ignore[no-untyped-def]
        return policy.decide(action)

    proxy = Proxy(decide, kit.Recorder(), host_map=dict(policy.host_map), cidr_grant=policy_cidr_grant(policy))
    async with kit.serving(proxy) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), kit.TIMEOUT)
        writer.close()
    return int(head.split(b" ")[1])


@pytest.mark.parametrize("policy_text", ["coding-agent", "loopback-by-cidr"])
@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_explain_and_the_proxy_agree(kit: Any, tmp_path: Any, policy_text: str, host: str) -> None:
    if policy_text == "coding-agent":
        policy = load_policy("coding-agent", workspace=tmp_path)
    else:
        path = tmp_path / "lo.yaml"
        path.write_text("version: 1\nname: lo\nextends: [coding-agent]\nrules:\n  - id: host-loopback\n"
                        "    allow: [connect]\n    cidrs: [127.0.0.0/8]\n")
        policy = load_policy(path, workspace=tmp_path)

    async def go() -> None:
        async with kit.echo_server() as (echo_port, _):
            answer = await asyncio.to_thread(explain_connect, policy, host, echo_port)
            status = await _through_the_proxy(policy, kit, f"{host}:{echo_port}")
            assert (status == 200) is answer.allowed, (status, answer)

    asyncio.run(asyncio.wait_for(go(), 60))


def test_explain_leads_with_what_the_proxy_does() -> None:
    res = CliRunner().invoke(main, ["policy", "explain", "coding-agent", "connect localhost:8080"])
    assert res.exit_code == 0, res.output
    first = res.output.splitlines()[0]
    assert first.startswith("DENY") and "through guard run's proxy" in first, res.output
    assert "ALLOW  connect localhost:8080" in res.output  # the rule's own verdict, shown as detail
    res = CliRunner().invoke(main, ["policy", "explain", "coding-agent", "connect localhost:8080", "--json"])
    assert json.loads(res.output)["enforced"] == "deny"
