"""Property tests: whatever bytes a client sends, the parsers answer with a value or a precise BadRequest,
never another exception, and normalized hosts are stable and safe to hand to the policy."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from guard.net.errors import BadDestination, BadRequest
from guard.net.proxy import MAX_HEAD, _parse_head, _split_authority
from guard.net.resolve import normalize_host, parse_ip, special_range

HOSTISH = st.text(alphabet=string.ascii_letters + string.digits + ".-_:[]@%/x \u00fc", max_size=80)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=MAX_HEAD))
def test_parse_head_never_crashes(head: bytes) -> None:
    try:
        method, target, version, headers = _parse_head(head)
        assert method
    except BadRequest as exc:
        assert exc.message
        return
    assert version in ("HTTP/1.0", "HTTP/1.1")
    assert target and " " not in target
    assert all("\r" not in v and "\n" not in v for _, v in headers)


@settings(max_examples=400, deadline=None)
@given(HOSTISH)
def test_normalize_host_is_total_and_idempotent(text: str) -> None:
    try:
        host = normalize_host(text)
    except BadDestination:
        return
    ip = parse_ip(host)
    if ip is None:
        assert set(host) <= set(string.ascii_lowercase + string.digits + "-._")
        assert not host.endswith(".") and ".." not in host
    else:
        special_range(host)  # every literal classifies without error
    assert normalize_host(host if ip is None or ip.version == 4 else f"[{host}]") == host


@settings(max_examples=400, deadline=None)
@given(HOSTISH, st.one_of(st.none(), st.integers(min_value=1, max_value=65535)))
def test_split_authority_is_total(text: str, default: int | None) -> None:
    try:
        host, port = _split_authority(text, default_port=default)
    except BadRequest:
        return
    assert 0 < port < 65536
    assert "@" not in host and "/" not in host
