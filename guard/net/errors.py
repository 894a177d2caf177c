"""Why a proxied connection could not be made, with the answer each client protocol gets.

These are `GuardError`s so they read like every other guard error in logs and records; the proxy turns them
into an HTTP status or a SOCKS5 reply code for the client rather than raising them further.
"""

from __future__ import annotations

from guard.errors import GuardError

SOCKS_GENERAL_FAILURE = 0x01
SOCKS_NOT_ALLOWED = 0x02
SOCKS_HOST_UNREACHABLE = 0x04
SOCKS_CONNECTION_REFUSED = 0x05
SOCKS_COMMAND_NOT_SUPPORTED = 0x07
SOCKS_ATYP_NOT_SUPPORTED = 0x08


class NetError(GuardError):
    """A proxied connection failed; `http_status` and `socks_reply` say how to tell the client."""

    http_status = 502
    socks_reply = SOCKS_GENERAL_FAILURE


class BadRequest(NetError):
    """The client's request is malformed, oversized, or asks for something the proxy does not do."""

    http_status = 400


class BadDestination(BadRequest):
    """The destination host is not a valid name or IP literal."""

    socks_reply = SOCKS_HOST_UNREACHABLE


class UnsupportedCommand(BadRequest):
    """SOCKS5 BIND/UDP ASSOCIATE, or an HTTP method/scheme the proxy does not forward."""

    http_status = 405
    socks_reply = SOCKS_COMMAND_NOT_SUPPORTED


class UnsupportedAddressType(BadRequest):
    socks_reply = SOCKS_ATYP_NOT_SUPPORTED


class ResolveFailed(NetError):
    """The name did not resolve; HTTP 502, SOCKS5 host unreachable."""

    socks_reply = SOCKS_HOST_UNREACHABLE


class ConnectFailed(NetError):
    """Every vetted address refused or timed out."""

    socks_reply = SOCKS_HOST_UNREACHABLE


class RequestTimeout(BadRequest):
    http_status = 408


class Denied(NetError):
    """The policy (or the proxy's own address rule) refused the destination: HTTP 403, SOCKS5 0x02."""

    http_status = 403
    socks_reply = SOCKS_NOT_ALLOWED

    def __init__(self, message: str, *, rule_id: str | None, verdict: str = "deny",
                 audit_only: bool = False) -> None:
        super().__init__(message)
        self.rule_id = rule_id
        self.verdict = verdict
        self.audit_only = audit_only
