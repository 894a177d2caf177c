"""The proxy on real loopback sockets: CONNECT, plain HTTP forward, SOCKS5, refusals and records."""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest

from guard.model import Action, Decision, Op, Verdict
from guard.net import Proxy

T = 10.0


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(60):
            await coro_fn()
    asyncio.run(bounded())


def fixed_resolver(table: dict[str, Sequence[str]], calls: list[str]):  # type: ignore[no-untyped-def]
    async def resolver(name: str) -> Sequence[str]:
        calls.append(name)
        if name not in table:
            raise OSError(-2, "Name or service not known")
        return table[name]
    return resolver


async def connect_via(port: int, target: str, extra: str = "") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra}\r\n".encode())
    await writer.drain()
    return reader, writer


async def read_status(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), T)
    return int(head.split(b" ")[1]), head


# -- CONNECT -----------------------------------------------------------------------------------------


def test_connect_relays_both_ways_and_records_bytes(kit: Any) -> None:
    rules = kit.Rules([("net.api", "allow", "api.example.com", None)])
    records = kit.Recorder()

    async def go() -> None:
        async with kit.echo_server() as (echo_port, peers):
            proxy = Proxy(rules, records, host_map={"api.example.com": "127.0.0.1"})
            async with kit.serving(proxy) as port:
                reader, writer = await connect_via(port, f"api.example.com:{echo_port}")
                status, _ = await read_status(reader)
                assert status == 200
                payload = bytes(range(256)) * 1000
                writer.write(payload)
                await writer.drain()
                got = await asyncio.wait_for(reader.readexactly(len(payload)), T)
                assert got == payload
                writer.write_eof()
                assert await asyncio.wait_for(reader.read(), T) == b""
                writer.close()
                await asyncio.sleep(0)
                await kit.until(lambda: bool(records))
        assert len(peers) == 1
        [rec] = records
        assert rec["type"] == "connection"
        assert rec["protocol"] == "connect"
        assert (rec["host"], rec["port"], rec["address"]) == ("api.example.com", echo_port, "127.0.0.1")
        assert (rec["verdict"], rec["rule_id"]) == ("allow", "net.api")
        assert rec["bytes_up"] == len(payload) and rec["bytes_down"] == len(payload)
        assert rec["client"].startswith("127.0.0.1:")
        assert type(rec["duration_ms"]) is int and rec["duration_ms"] >= 0
        assert rules.asked[0] == Action(op=Op.CONNECT, target=f"api.example.com:{echo_port}",
                                        addresses=("127.0.0.1",))

    run(go)


def test_denied_host_gets_403_with_rule_and_reason_and_no_dns_query(kit: Any) -> None:
    rules = kit.Rules([("net.deny-paste", "deny", "paste.example", None),
                       ("net.api", "allow", "api.example.com", None)])
    records = kit.Recorder()
    calls: list[str] = []

    async def go() -> None:
        proxy = Proxy(rules, records, resolver=fixed_resolver({"paste.example": ["93.184.216.34"]}, calls))
        async with kit.serving(proxy) as port:
            reader, writer = await connect_via(port, "paste.example:443")
            status, headers, body = await kit.read_response(reader)
            writer.close()
            assert status == 403
            assert headers["x-guard-rule"] == "net.deny-paste"
            assert b"net.deny-paste" in body and b"rule net.deny-paste says deny" in body
            # a secret spelled as a subdomain never reaches a resolver when the name is refused
            reader, writer = await connect_via(port, "c2VjcmV0.exfil.example:443")
            status, headers, body = await kit.read_response(reader)
            writer.close()
            assert status == 403 and headers["x-guard-rule"] == "default"
            assert b"connect c2vjcmv0.exfil.example:443 denied by rule default: no rule matched" in body
        assert calls == []
        assert [r["verdict"] for r in records] == ["deny", "deny"]
        assert records[0]["rule_id"] == "net.deny-paste"
        assert records[0]["address"] is None and records[0]["bytes_up"] == 0

    run(go)


def test_ip_literal_is_decided_as_the_ip(kit: Any) -> None:
    rules = kit.Rules([("net.local", "allow", "allowed.test", None)])
    records = kit.Recorder()

    async def go() -> None:
        async with kit.echo_server() as (echo_port, peers):
            proxy = Proxy(rules, records, host_map={"allowed.test": "127.0.0.1"})
            async with kit.serving(proxy) as port:
                for target in (f"127.0.0.1:{echo_port}", f"[::ffff:127.0.0.1]:{echo_port}"):
                    reader, writer = await connect_via(port, target)
                    status, _, _ = await kit.read_response(reader)
                    writer.close()
                    assert status == 403
            assert peers == []
        assert [a.target for a in rules.asked] == [f"127.0.0.1:{echo_port}"] * 2
        assert rules.asked[0].addresses == ("127.0.0.1",)

    run(go)


def test_cidr_grant_lets_an_ip_literal_through(kit: Any) -> None:
    rules = kit.Rules([("net.loopback-dev", "allow", "127.0.0.1/32", None)])

    async def go() -> None:
        proxy = Proxy(rules, kit.Recorder(), cidr_grant=rules.grant)
        async with kit.echo_server() as (echo_port, _), kit.serving(proxy) as port:
            reader, writer = await connect_via(port, f"127.0.0.1:{echo_port}")
            status, _ = await read_status(reader)
            assert status == 200
            writer.write(b"ping")
            assert await asyncio.wait_for(reader.readexactly(4), T) == b"ping"
            writer.close()

    run(go)


@pytest.mark.parametrize(("rule", "target"), [
    (("loopback", "allow", "127.0.0.1", None), "127.0.0.1"),
    (("anything", "allow", "*", None), "127.0.0.1"),
    (("anything", "allow", "*", None), "169.254.169.254"),
    (("lo-by-name", "allow", "localhost", None), "localhost"),
])
def test_host_rules_never_open_special_addresses_at_the_proxy(kit: Any, rule: Any, target: str) -> None:
    """Inside the sandbox 127.0.0.1 is its own loopback; at the proxy it is the host's. Only a CIDR grant
    opens it, never a host rule naming the address, never `*`."""
    rules = kit.Rules([rule])
    records = kit.Recorder()

    async def go() -> None:
        async with kit.echo_server() as (echo_port, peers):
            proxy = Proxy(rules, records, cidr_grant=rules.grant,
                          resolver=fixed_resolver({"localhost": ["127.0.0.1", "::1"]}, []))
            async with kit.serving(proxy) as port:
                reader, writer = await connect_via(port, f"{target}:{echo_port}")
                status, headers, _ = await kit.read_response(reader)
                writer.close()
            assert peers == []
        assert status == 403 and headers["x-guard-rule"] == "guard:special-address"

    run(go)


def test_shipped_coding_agent_policy_at_the_proxy(kit: Any, tmp_path: Any) -> None:
    from guard.net.grants import policy_cidr_grant
    from guard.policy import load_policy

    policy = load_policy("coding-agent", workspace=tmp_path)

    async def decide(action: Action) -> Decision:
        return policy.decide(action)

    async def go() -> None:
        table = {"pypi.org": ["10.0.0.9"], "files.pythonhosted.org": ["151.101.0.223"]}
        proxy = Proxy(decide, kit.Recorder(), cidr_grant=policy_cidr_grant(policy),
                      resolver=fixed_resolver(table, []))
        async with kit.serving(proxy) as port:
            for target, rule in (("127.0.0.1:22", "guard:special-address"),
                                 ("169.254.169.254:80", "private-networks"),
                                 ("pypi.org:443", "private-networks"),
                                 ("pypi.org:80", "default"),
                                 ("evil.example:443", "default")):
                reader, writer = await connect_via(port, target)
                status, headers, _ = await kit.read_response(reader)
                writer.close()
                assert (status, headers["x-guard-rule"]) == (403, rule), target

    run(go)


def test_host_header_differing_from_target_is_refused(kit: Any) -> None:
    rules = kit.Rules([("net.a", "allow", "allowed.test", None)])
    records = kit.Recorder()

    async def go() -> None:
        async with kit.http_origin() as (origin_port, heads), kit.echo_server() as (echo_port, peers):
            proxy = Proxy(rules, records, host_map={"allowed.test": "127.0.0.1"})
            async with kit.serving(proxy) as port:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(f"GET http://allowed.test:{origin_port}/x HTTP/1.1\r\n"
                             f"Host: denied.test:{origin_port}\r\n\r\n".encode())
                status, _, body = await kit.read_response(reader)
                writer.close()
                assert status == 400 and b"differs from the request target" in body
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(f"CONNECT allowed.test:{echo_port} HTTP/1.1\r\n"
                             f"Host: metadata.internal:{echo_port}\r\n\r\n".encode())
                status, _, _ = await kit.read_response(reader)
                writer.close()
                assert status == 400
            assert heads == [] and peers == []
        assert rules.asked == []
        assert [r["rule_id"] for r in records] == ["guard:bad-request"] * 2

    run(go)


@pytest.mark.parametrize("address", ["169.254.169.254", "127.0.0.1", "10.0.0.7", "fd00:ec2::254"])
def test_allowed_name_resolving_to_special_address_is_refused(kit: Any, address: str) -> None:
    rules = kit.Rules([("net.api", "allow", "api.example.com", None)])
    records = kit.Recorder()
    calls: list[str] = []

    async def go() -> None:
        proxy = Proxy(rules, records, resolver=fixed_resolver({"api.example.com": [address]}, calls))
        async with kit.serving(proxy) as port:
            reader, writer = await connect_via(port, "api.example.com:80")
            status, headers, body = await kit.read_response(reader)
            writer.close()
        assert status == 403
        assert headers["x-guard-rule"] == "guard:special-address"
        assert address.encode() in body and b"no rule grants by CIDR" in body
        assert records[0]["addresses"] == [address] and records[0]["address"] is None
        assert calls == ["api.example.com"]

    run(go)


def test_host_map_never_grants_cloud_metadata(kit: Any) -> None:
    rules = kit.Rules([("net.api", "allow", "api.example.com", None)])

    async def go() -> None:
        proxy = Proxy(rules, kit.Recorder(), host_map={"api.example.com": "169.254.169.254"})
        async with kit.serving(proxy) as port:
            reader, writer = await connect_via(port, "api.example.com:80")
            status, headers, _ = await kit.read_response(reader)
            writer.close()
        assert status == 403 and headers["x-guard-rule"] == "guard:special-address"

    run(go)


def test_special_addresses_are_skipped_and_no_second_resolution(kit: Any) -> None:
    """DNS answers metadata first and loopback second; only loopback is granted (by CIDR), and the
    connection goes to the vetted address from the one resolution made."""
    rules = kit.Rules([("net.api", "allow", "api.example.com", None),
                       ("net.lo", "allow", "127.0.0.1/32", None)])
    records = kit.Recorder()
    calls: list[str] = []

    async def go() -> None:
        async with kit.echo_server() as (echo_port, _):
            table = {"api.example.com": ["169.254.169.254", "127.0.0.1"]}
            proxy = Proxy(rules, records, resolver=fixed_resolver(table, calls), cidr_grant=rules.grant)
            async with kit.serving(proxy) as port:
                reader, writer = await connect_via(port, f"api.example.com:{echo_port}")
                status, _ = await read_status(reader)
                assert status == 200
                writer.write(b"x")
                assert await asyncio.wait_for(reader.readexactly(1), T) == b"x"
                writer.close()
                await kit.until(lambda: bool(records))
        assert calls == ["api.example.com"]
        assert records[0]["address"] == "127.0.0.1"
        # by name, by name with its addresses, then the name at the one special address it would use
        assert [a.target for a in rules.asked] == [f"api.example.com:{echo_port}"] * 3
        assert rules.asked[2].addresses == ("127.0.0.1",)

    run(go)


@pytest.mark.parametrize(("host", "allowed"), [
    ("api.example.com", True),
    ("API.Example.COM.", True),
    ("deep.api.example.com", True),
    ("example.com", False),
    ("badexample.com", False),
    ("example.com.evil.net", False),
    ("api.example.com.evil.net", False),
    ("api-example.com", False),
])
def test_wildcard_apex_and_lookalikes(kit: Any, host: str, allowed: bool) -> None:
    rules = kit.Rules([("net.example", "allow", "*.example.com", None)])
    mapped = {"api.example.com": "127.0.0.1", "deep.api.example.com": "127.0.0.1"}

    async def go() -> None:
        proxy = Proxy(rules, kit.Recorder(), host_map=mapped, resolver=fixed_resolver({}, []))
        async with kit.echo_server() as (echo_port, _), kit.serving(proxy) as port:
            reader, writer = await connect_via(port, f"{host}:{echo_port}")
            status, _ = await read_status(reader)
            writer.close()
        assert status == (200 if allowed else 403)

    run(go)


def test_ask_that_comes_back_unanswered_and_decide_errors_are_refusals(kit: Any) -> None:
    async def ask(action: Action) -> Decision:
        return Decision(Verdict.ASK, "net.ask", "needs a person")

    async def broken(action: Action) -> Decision:
        raise ConnectionRefusedError("daemon down")

    async def go() -> None:
        async with kit.echo_server() as (echo_port, peers):
            for decide, rule in ((ask, "net.ask"), (broken, "guard:no-decision")):
                records = kit.Recorder()
                proxy = Proxy(decide, records, host_map={"a.test": "127.0.0.1"})
                async with kit.serving(proxy) as port:
                    reader, writer = await connect_via(port, f"a.test:{echo_port}")
                    status, headers, _ = await kit.read_response(reader)
                    writer.close()
                assert status == 403 and headers["x-guard-rule"] == rule
            assert peers == []

    run(go)


def test_ask_waits_for_the_decision(kit: Any) -> None:
    """The daemon holds an `ask`; the proxy waits and then honours the answer."""
    gate = asyncio.Event()

    async def held(action: Action) -> Decision:
        await gate.wait()
        return Decision(Verdict.ALLOW, "net.ask", "approved by a person")

    async def go() -> None:
        proxy = Proxy(held, kit.Recorder(), host_map={"a.test": "127.0.0.1"})
        async with kit.echo_server() as (echo_port, _), kit.serving(proxy) as port:
            reader, writer = await connect_via(port, f"a.test:{echo_port}")
            pending = asyncio.ensure_future(read_status(reader))
            await asyncio.sleep(0.2)
            assert not pending.done()
            gate.set()
            status, _ = await pending
            assert status == 200
            writer.close()

    run(go)


# -- plain HTTP forward -------------------------------------------------------------------------------


def test_plain_http_forward_rewrites_to_origin_form(kit: Any) -> None:
    rules = kit.Rules([("net.a", "allow", "allowed.test", None)])
    records = kit.Recorder()

    async def go() -> None:
        async with kit.http_origin(b"body!") as (origin_port, heads):
            proxy = Proxy(rules, records, host_map={"allowed.test": "127.0.0.1"})
            async with kit.serving(proxy) as port:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(f"GET http://Allowed.Test:{origin_port}/p/a?q=1#frag HTTP/1.1\r\n"
                             f"Host: allowed.test:{origin_port}\r\nProxy-Authorization: Basic c2VjcmV0\r\n"
                             "Proxy-Connection: keep-alive\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\n"
                             "Keep-Alive: 5\r\nTE: trailers\r\nUser-Agent: t\r\n\r\n".encode())
                status, _, body = await kit.read_response(reader)
                writer.close()
        assert status == 200 and body == b"body!"
        [head] = heads
        lines = head.decode().split("\r\n")
        assert lines[0] == "GET /p/a?q=1 HTTP/1.1"
        names = {line.split(":")[0].lower() for line in lines[1:] if line}
        assert names == {"host", "user-agent", "connection"}
        assert f"Host: allowed.test:{origin_port}" in lines and "Connection: close" in lines
        assert records[0]["protocol"] == "http" and records[0]["bytes_down"] > 0
        assert records[0]["bytes_up"] == 0  # no body: the rewritten head is not the client's bytes

    run(go)


@pytest.mark.parametrize(("request_line", "status"), [
    ("GET / HTTP/1.1", 400),
    ("GET https://allowed.test/ HTTP/1.1", 405),
    ("GET ftp://allowed.test/ HTTP/1.1", 405),
    ("GET http://user:pw@allowed.test/ HTTP/1.1", 400),
    ("GET http://allowed.test:99999/ HTTP/1.1", 400),
    ("GET http://2130706433/ HTTP/1.1", 400),
    ("CONNECT allowed.test HTTP/1.1", 400),
    ("GET http://allowed.test/ HTTP/2.0", 400),
    ("GET  http://allowed.test/ HTTP/1.1", 400),
    ("G\x01T http://allowed.test/ HTTP/1.1", 400),
])
def test_malformed_requests_get_an_error(kit: Any, request_line: str, status: int) -> None:
    rules = kit.Rules([("net.a", "allow", "allowed.test", None)])

    async def go() -> None:
        async with kit.serving(Proxy(rules, kit.Recorder(), host_map={"allowed.test": "127.0.0.1"})) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request_line.encode("latin-1") + b"\r\n\r\n")
            got, _, _ = await kit.read_response(reader)
            writer.close()
        assert got == status
        assert rules.asked == []

    run(go)


def test_garbage_and_oversized_heads_do_not_crash_the_proxy(kit: Any) -> None:
    rules = kit.Rules([("net.a", "allow", "allowed.test", None)])
    records = kit.Recorder()

    async def go() -> None:
        async with kit.echo_server() as (echo_port, _):
            proxy = Proxy(rules, records, host_map={"allowed.test": "127.0.0.1"})
            async with kit.serving(proxy) as port:
                for junk in (b"\x16\x03\x01\x02\x00" + bytes(range(256)) * 4 + b"\r\n\r\n",
                             b"GET http://allowed.test/" + b"a" * 40000 + b" HTTP/1.1\r\n\r\n",
                             b"CONNECT allowed.test:1 HTTP/1.1\r\n" + b"X: y\r\n" * 5000 + b"\r\n",
                             b"CONNECT allowed.test:1 HTTP/1.1\r\nno colon here\r\n\r\n",
                             b"CONNECT allowed.test:1 HTTP/1.1\r\n folded: x\r\n\r\n"):
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.write(junk)
                    status, _, _ = await kit.read_response(reader)
                    writer.close()
                    assert status == 400
                reader, writer = await connect_via(port, f"allowed.test:{echo_port}")
                status, _ = await read_status(reader)
                assert status == 200
                writer.close()
        assert [r["rule_id"] for r in records[:5]] == ["guard:bad-request"] * 5

    run(go)


def test_half_open_flood_does_not_starve_other_clients(kit: Any) -> None:
    rules = kit.Rules([("net.a", "allow", "allowed.test", None)])
    records = kit.Recorder()

    async def go() -> None:
        async with kit.echo_server() as (echo_port, _):
            proxy = Proxy(rules, records, host_map={"allowed.test": "127.0.0.1"}, head_timeout=30.0)
            async with kit.serving(proxy) as port:
                flood = []
                for i in range(300):
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.write(b"CONNECT allowed.te" if i % 2 else b"\x05\x01")
                    flood.append(writer)
                await kit.until(lambda: proxy.active >= 300)
                assert proxy.active == 300
                reader, writer = await connect_via(port, f"allowed.test:{echo_port}")
                status, _ = await read_status(reader)
                assert status == 200
                writer.write(b"still served")
                assert await asyncio.wait_for(reader.readexactly(12), T) == b"still served"
                writer.close()
                for w in flood:
                    w.close()
                await kit.until(lambda: proxy.active == 0)
                assert proxy.active == 0

    run(go)


def test_slow_head_times_out_and_is_recorded(kit: Any) -> None:
    records = kit.Recorder()

    async def go() -> None:
        proxy = Proxy(kit.Rules([]), records, head_timeout=0.2)
        async with kit.serving(proxy) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"CONNECT a")
            status, _, _ = await kit.read_response(reader)
            writer.close()
        assert status == 408
        assert records[0]["verdict"] == "deny" and "time limit" in records[0]["reason"]

    run(go)


def test_connection_cap_refuses_beyond_the_limit(kit: Any) -> None:
    records = kit.Recorder()

    async def go() -> None:
        proxy = Proxy(kit.Rules([]), records, max_connections=2)
        async with kit.serving(proxy) as port:
            held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
            await kit.until(lambda: proxy.active == 2)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await asyncio.wait_for(reader.read(), T) == b""
            writer.close()
            for _, w in held:
                w.close()
        assert any(r["rule_id"] == "guard:busy" for r in records)

    run(go)


def test_unreachable_destination_is_502(kit: Any) -> None:
    rules = kit.Rules([("net.a", "allow", "allowed.test", None)])
    records = kit.Recorder()

    async def go() -> None:
        async with kit.echo_server() as (dead_port, _):
            pass  # the port is now closed
        async with kit.serving(Proxy(rules, records, host_map={"allowed.test": "127.0.0.1"})) as port:
            reader, writer = await connect_via(port, f"allowed.test:{dead_port}")
            status, _, body = await kit.read_response(reader)
            writer.close()
        assert status == 502 and b"cannot connect" in body
        assert records[0]["verdict"] == "allow" and "cannot connect" in records[0]["error"]

    run(go)


# -- SOCKS5 ------------------------------------------------------------------------------------------


def socks_request(host: str, port: int, *, atyp: int | None = None, command: int = 1) -> bytes:
    if atyp is None:
        try:
            atyp = 1 if ipaddress.ip_address(host).version == 4 else 4
        except ValueError:
            atyp = 3
    if atyp == 1:
        addr = ipaddress.IPv4Address(host).packed
    elif atyp == 4:
        addr = ipaddress.IPv6Address(host).packed
    elif atyp == 3:
        addr = bytes([len(host)]) + host.encode()
    else:
        addr = b""
    return bytes([5, command, 0, atyp]) + addr + struct.pack("!H", port)


async def socks(port: int, request: bytes, methods: bytes = b"\x00"
                ) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x05" + bytes([len(methods)]) + methods)
    choice = await asyncio.wait_for(reader.readexactly(2), T)
    if choice != b"\x05\x00":
        return choice[1], reader, writer
    writer.write(request)
    reply = await asyncio.wait_for(reader.readexactly(10), T)
    assert reply[0] == 5
    return reply[1], reader, writer


@pytest.mark.parametrize(("host", "listen", "grant"), [
    ("allowed.test", "127.0.0.1", ("net.a", "allow", "allowed.test", None)),
    ("127.0.0.1", "127.0.0.1", ("net.lo4", "allow", "127.0.0.0/8", None)),
    ("::1", "::1", ("net.lo6", "allow", "::1/128", None)),
])
def test_socks5_address_types_relay(kit: Any, host: str, listen: str, grant: tuple[str, str, str, None]) -> None:
    rules = kit.Rules([grant])
    records = kit.Recorder()

    async def go() -> None:
        proxy = Proxy(rules, records, host_map={"allowed.test": "127.0.0.1"}, cidr_grant=rules.grant)
        async with kit.echo_server(listen) as (echo_port, _), kit.serving(proxy) as port:
            code, reader, writer = await socks(port, socks_request(host, echo_port))
            assert code == 0
            writer.write(b"over socks")
            assert await asyncio.wait_for(reader.readexactly(10), T) == b"over socks"
            writer.close()
            await kit.until(lambda: bool(records))
        assert records[0]["protocol"] == "socks5" and records[0]["address"] == listen
        assert records[0]["bytes_up"] == 10 == records[0]["bytes_down"]

    run(go)


def test_socks5_refusals_use_the_right_reply_codes(kit: Any) -> None:
    rules = kit.Rules([("net.a", "allow", "allowed.test", None)])
    records = kit.Recorder()

    async def go() -> None:
        async with kit.echo_server() as (echo_port, peers):
            async with kit.serving(Proxy(rules, records, host_map={"allowed.test": "127.0.0.1"},
                                         resolver=fixed_resolver({}, []))) as port:
                # the same destination by another address type is still decided as an IP
                assert (await socks(port, socks_request("127.0.0.1", echo_port)))[0] == 0x02
                assert (await socks(port, socks_request("::ffff:127.0.0.1", echo_port)))[0] == 0x02
                assert (await socks(port, socks_request("denied.test", echo_port)))[0] == 0x02
                assert (await socks(port, socks_request("allowed.test", echo_port, command=2)))[0] == 0x07
                assert (await socks(port, socks_request("allowed.test", echo_port, command=3)))[0] == 0x07
                assert (await socks(port, socks_request("x", echo_port, atyp=9)))[0] == 0x08
                assert (await socks(port, socks_request("2130706433", echo_port, atyp=3)))[0] == 0x04
                assert (await socks(port, b"\x05\x01\x00\x03\x02\xff\xfe\x00\x50"))[0] == 0x04
                assert (await socks(port, b"", methods=b"\x02"))[0] == 0xFF
            assert peers == []
        assert all(r["verdict"] == "deny" for r in records) and len(records) == 9

    run(go)


def test_socks5_without_no_auth_method_gets_ff_and_nothing_more(kit: Any) -> None:
    async def go() -> None:
        async with kit.serving(Proxy(kit.Rules([]), kit.Recorder())) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"\x05\x02\x01\x02")  # GSSAPI, username/password
            assert await asyncio.wait_for(reader.read(), T) == b"\x05\xff"
            writer.close()

    run(go)


def test_socks5_unresolvable_name_is_host_unreachable(kit: Any) -> None:
    rules = kit.Rules([("net.nx", "allow", "nx.example", None)])

    async def go() -> None:
        async with kit.serving(Proxy(rules, kit.Recorder(), resolver=fixed_resolver({}, []))) as port:
            assert (await socks(port, socks_request("nx.example", 443)))[0] == 0x04

    run(go)


def test_half_closed_tunnel_survives_garbage_collection(kit: Any) -> None:
    """Regression: after the client's EOF its transport stops polling, and asyncio holds tasks and stream
    readers only weakly; the proxy must keep the relay alive until the destination answers."""
    import gc

    release = asyncio.Event()

    async def late(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client's EOF arrives through the tunnel
        await release.wait()
        writer.write(b"late answer")
        await writer.drain()
        writer.close()

    async def go() -> None:
        upstream = await asyncio.start_server(late, "127.0.0.1", 0)
        up_port = upstream.sockets[0].getsockname()[1]
        proxy = Proxy(kit.Rules([("net.a", "allow", "a.test", None)]), kit.Recorder(),
                      host_map={"a.test": "127.0.0.1"})
        try:
            async with kit.serving(proxy) as port:
                reader, writer = await connect_via(port, f"a.test:{up_port}")
                status, _ = await read_status(reader)
                assert status == 200
                writer.write_eof()
                await asyncio.sleep(0.3)
                gc.collect()
                release.set()
                assert await asyncio.wait_for(reader.read(), T) == b"late answer"
                writer.close()
        finally:
            upstream.close()
            await upstream.wait_closed()

    run(go)


def test_aclose_ends_live_tunnels_and_records_them(kit: Any) -> None:
    records = kit.Recorder()

    async def go() -> None:
        proxy = Proxy(kit.Rules([("net.a", "allow", "a.test", None)]), records, host_map={"a.test": "127.0.0.1"})
        async with kit.echo_server() as (echo_port, _), kit.serving(proxy) as port:
            reader, writer = await connect_via(port, f"a.test:{echo_port}")
            assert (await read_status(reader))[0] == 200
            writer.write(b"hi")
            assert await asyncio.wait_for(reader.readexactly(2), T) == b"hi"
            assert proxy.active == 1
            await proxy.aclose()
            assert proxy.active == 0
            assert await asyncio.wait_for(reader.read(), T) == b""
            writer.close()
        assert len(records) == 1 and records[0]["bytes_up"] == 2 and records[0]["verdict"] == "allow"

    run(go)


def test_only_refusals_no_decision_made_go_to_the_refused_hook(kit: Any) -> None:
    """The session records what `refused` gets as a deny decision and counts it: exactly the proxy's own
    refusals of a destination (once each), never a policy deny (already a recorded decision) nor a
    request that names no destination."""
    rules = kit.Rules([("net.api", "allow", "api.example.com", None), ("net.no", "deny", "no.example.com", None)])
    calls: list[str] = []
    resolver = fixed_resolver({"api.example.com": ["127.0.0.1", "10.0.0.7"]}, calls)

    async def broken(action: Action) -> Decision:
        raise ConnectionRefusedError("daemon down")

    async def go() -> None:
        for decide, target, rule in ((rules, "api.example.com:80", "guard:special-address"),
                                     (rules, "no.example.com:80", None),
                                     (broken, "api.example.com:80", "guard:no-decision"),
                                     (rules, "not a target", None)):
            records = kit.Recorder()
            refused: list[tuple[Action, Decision]] = []
            proxy = Proxy(decide, records, resolver=resolver,
                          refused=lambda a, d, into=refused: into.append((a, d)))
            async with kit.serving(proxy) as port:
                reader, writer = await connect_via(port, target)
                status, _, _ = await kit.read_response(reader)
                writer.close()
            assert status in (400, 403)
            assert len(records) == 1 and records[0]["verdict"] == "deny"  # serving() waited for the record
            if rule is None:
                assert refused == [], (target, refused)
                continue
            [(action, decision)] = refused
            assert (action.op, action.target, decision.verdict, decision.rule_id) == \
                (Op.CONNECT, target, Verdict.DENY, rule)
            assert decision.rule_id == records[0]["rule_id"] and action.addresses == tuple(records[0]["addresses"])

    run(go)
