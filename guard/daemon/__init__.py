"""guard.daemon: the per-user service that owns the audit writer, keys, sessions, approvals and reloads.

Callers use the blocking client (`ensure_running(home)` -> `DaemonClient`); the asyncio service lives in
`guard.daemon.server` and is imported only by `guard daemon run`, so `guard run` does not pay for it.
The wire format is specified in docs/protocol.md and validated in `guard.daemon.protocol`.
"""

from guard.daemon.client import (
    DaemonClient,
    DaemonNotRunning,
    DaemonReplyError,
    ensure_running,
    watch_approvals,
)

__all__ = ["DaemonClient", "DaemonNotRunning", "DaemonReplyError", "ensure_running", "watch_approvals"]
