"""SIGKILL a real writer process mid-append, again and again: no sealed line is ever lost."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from guard.audit import AuditWriter, Keyring, verify_log

WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from guard.audit import AuditWriter, decision_event
    from guard.model import Action, Decision, Op, Verdict
    home = Path(sys.argv[1])
    ev = decision_event("crash", Action(Op.WRITE, "/w/" + "x" * 200, pid=1), Decision(Verdict.ALLOW, "r", "ok"))
    with AuditWriter(home, checkpoint_every=37, epoch_checkpoints=4) as w:
        last = -1
        print("open", w.sealed_size, flush=True)
        while True:
            w.append(ev)
            if w.sealed_size != last:
                last = w.sealed_size
                print(last, flush=True)  # printed only after the seal was fdatasync'ed
""")

ITERATIONS = 30


def test_sigkill_mid_append_never_loses_a_sealed_line(guard_home: Path) -> None:
    root = Keyring(guard_home).init(now=time.time())
    rng = random.Random(20260101)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    sealed_reported = 0
    torn_seen = 0
    for i in range(ITERATIONS):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(guard_home)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env)
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline().split()
            assert first and first[0] == b"open", proc.stderr.read() if proc.stderr else b""
            for _ in range(rng.randint(1, 6)):
                line = proc.stdout.readline()
                if line:
                    sealed_reported = max(sealed_reported, int(line))
            time.sleep(rng.random() * 0.004)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        assert proc.stdout is not None
        for line in proc.stdout.read().split():  # seals reported before the kill landed
            sealed_reported = max(sealed_reported, int(line))
        report = verify_log(guard_home / "log", root.public)
        assert not report.tampered, (i, report.first_break)
        assert report.sealed >= sealed_reported, (i, report.sealed, sealed_reported)
        torn_seen += report.torn_tail is not None
    with AuditWriter(guard_home):
        pass
    final = verify_log(guard_home / "log", root.public)
    assert final.exit_code == 0, final.findings
    assert final.sealed >= sealed_reported
    print(f"torn tails seen: {torn_seen}")
