#!/usr/bin/env python3
"""What the daemon spends per record it ingests from a session's spool into the signed trail.

    python3 scripts/bench_ingest.py [--records N] [--rounds R]

Every record guard run allows or refuses reaches the trail this way (guard.daemon.ingest), on the
daemon's one thread, beside the agent's work on the same cores. A spool of N records as guard run writes
them (nine in ten writes in the workspace, as the compiled core spools them; execs with their argv; a few
refusals and connections) is ingested by a real SpoolIngest into a real AuditWriter (checkpoints signed,
fdatasync'd in the background), once by the daemon's short way for decision records and once with it
turned off (every record through parse_record_event, the model and decision_event, as before), in
interleaved rounds, each into a fresh GUARD_HOME. Medians of the rounds, CPU time of this process per
record. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from guard.audit import AuditWriter, Keyring  # noqa: E402
from guard.daemon import protocol  # noqa: E402
from guard.daemon.ingest import SpoolIngest  # noqa: E402
from guard.spool import SpoolWriter  # noqa: E402

SESSION = "0123456789"


def spooled(i: int) -> dict[str, Any]:
    """Record i of a session's spool, in the shape guard run writes it."""
    allow = {"audit_only": False, "reason": "The agent works on the workspace.", "rule_id": "workspace",
             "verdict": "allow"}
    kind = i % 20
    if kind < 18:
        action = {"kind": "file", "op": "write", "pid": 4000 + i % 7,
                  "target": f"/home/dev/project/build/obj{i % 53}/unit_{i}.o"}
        return {"type": "decision", "action": action, "decision": allow}
    if kind == 18:
        action = {"kind": "process", "op": "run", "pid": 5000 + i % 11,
                  "target": "cc -c -O2 unit.c -o unit.o",
                  "argv": ["cc", "-c", "-O2", "unit.c", "-o", "unit.o"], "exe": "/usr/bin/cc",
                  "cwd": "/home/dev/project"}
        return {"type": "decision", "action": action, "decision": {**allow, "rule_id": "dev-tools"}}
    action = {"kind": "file", "op": "write", "pid": 4000, "target": "/home/dev/.bashrc"}
    return {"type": "decision", "action": action,
            "decision": {"audit_only": False, "reason": "Shell start-up files are never written.",
                         "rule_id": "shell-rc", "verdict": "deny"}}


def one_round(parent: Path, records: int, *, short_way: bool) -> float:
    """CPU seconds of this process to ingest `records` spooled records; the trail is then checked whole."""
    home = Path(tempfile.mkdtemp(prefix="ingest-", dir=parent))
    try:
        os.chmod(home, 0o700)
        Keyring(home).init(now=time.time())
        with AuditWriter(home) as writer:
            ingest = SpoolIngest(home, writer)
            spool = SpoolWriter.create(home, SESSION)
            for i in range(records):
                spool.append(spooled(i))
            ingest.opened(SESSION, 0)
            way = (contextlib.nullcontext() if short_way
                   else mock.patch.object(protocol, "trail_decision", lambda _event: None))
            with way:
                start = time.process_time()
                while True:
                    result = ingest.ingest(SESSION)
                    if not result.more:
                        break
                took = time.process_time() - start
            spool.close()
            if result.acked != records or result.damaged is not None:
                raise SystemExit(f"ingest stopped at {result.acked} of {records}: {result.damaged}")
            if int(writer.size) < records:
                raise SystemExit(f"the trail holds {writer.size} lines, expected at least {records}")
        return took
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", type=Path, default=None,
                    help="where the scratch GUARD_HOMEs go (tmpfs is best)")
    args = ap.parse_args()
    times: dict[str, list[float]] = {"short": [], "general": []}
    for _ in range(args.rounds):
        for way in times:
            times[way].append(one_round(args.dir or Path(tempfile.gettempdir()), args.records,
                                        short_way=way == "short"))
    us = {way: statistics.median(t) / args.records * 1e6 for way, t in times.items()}
    print(f"ingest, short way:   {1e6 / us['short']:,.0f} records/s ({us['short']:.1f} us of CPU each)")
    print(f"ingest, general way: {1e6 / us['general']:,.0f} records/s ({us['general']:.1f} us of CPU each; "
          f"short/general {us['short'] / us['general']:.2f})")
    print(json.dumps({"records": args.records, "rounds": args.rounds, "short_us": round(us["short"], 2),
                      "general_us": round(us["general"], 2), "ratio": round(us["short"] / us["general"], 3)}))


if __name__ == "__main__":
    main()
