"""Run one command beside the scripted model stand-in, inside a network namespace that has only loopback.

Real agent CLIs phone home (telemetry, update checks, connectivity probes) and the default policy grants the
real model APIs, so an agent test must make sure no connection can reach a real host: this harness is started
in a fresh network namespace (`loopback_only_prefix()`), brings `lo` up, serves the stand-in on
127.0.0.1:PORT from a thread, and runs the command with its stdio passed through. When it exits, the
namespace and the server go with it.

    python agent_harness.py --steps S.json --log L.jsonl --port 8080 -- guard run ... -- claude -p ...
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_server import serve


def loopback_only_prefix() -> list[str] | str:
    """The argv prefix that runs a command in a new network namespace with only loopback, or the reason
    this host cannot make one (the caller skips with it)."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    if shutil.which("ip") is None:
        return "ip (iproute2) is not installed"
    if os.geteuid() == 0:
        return ["unshare", "--net", "--"]
    # an unprivileged engineer: a user namespace that maps the user to itself owns the new netns; its
    # capabilities are kept for the harness alone (to bring `lo` up) and dropped before the command runs
    return ["unshare", "--map-current-user", "--keep-caps", "--net", "--"]


def _drop_capabilities() -> None:
    """In the child, before exec: no ambient capabilities, so the command runs as the plain user it is (an
    engineer's agent has none); a no-op for root, whose namespace is the host's user namespace."""
    if os.geteuid() == 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    pr_cap_ambient, pr_cap_ambient_clear_all = 47, 4
    if libc.prctl(pr_cap_ambient, pr_cap_ambient_clear_all, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", required=True, type=Path)
    ap.add_argument("--log", required=True, type=Path)
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    links = subprocess.run(["ip", "-o", "link"], check=True, capture_output=True, text=True).stdout
    if any(line.split(":")[1].strip() != "lo" for line in links.splitlines() if line.strip()):
        print(f"agent_harness: refusing to run, the namespace has more than loopback:\n{links}", file=sys.stderr)
        return 97
    server = serve(json.loads(args.steps.read_text()), args.log, port=args.port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        return subprocess.run(command, timeout=args.timeout, preexec_fn=_drop_capabilities).returncode
    except subprocess.TimeoutExpired:
        print(f"agent_harness: {command[0]} did not finish within {args.timeout:.0f} s", file=sys.stderr)
        return 98
    finally:
        server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
