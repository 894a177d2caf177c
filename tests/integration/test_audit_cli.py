"""The auditor's and the engineer's commands, driven as a person would: real processes, real files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VECTORS = REPO / "tests" / "vectors" / "audit"


def guard(*args: str, check: int | None = 0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "guard", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=REPO, timeout=60)
    if check is not None:
        assert proc.returncode == check, (args, proc.returncode, proc.stdout, proc.stderr)
    return proc


WRITE = textwrap.dedent("""
    import sys
    from pathlib import Path
    from guard.audit import AuditWriter, decision_event, session_event
    from guard.model import Action, Decision, Op, Verdict
    home, n = Path(sys.argv[1]), int(sys.argv[2])
    with AuditWriter(home, checkpoint_every=7, epoch_checkpoints=3) as w:
        w.append(session_event("alpha", "start", policy="coding-agent"))
        for i in range(n):
            verdict = Verdict.DENY if i % 4 == 0 else Verdict.ALLOW
            w.append(decision_event("alpha" if i % 2 else "beta", Action(Op.READ, f"/w/f{i}", pid=10 + i),
                                    Decision(verdict, f"rule-{i % 3}", "because")))
        w.append(session_event("alpha", "end", exit_status=0))
""")


def write(home: Path, n: int) -> None:
    subprocess.run([sys.executable, "-c", WRITE, str(home), str(n)], check=True, cwd=REPO,
                   env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)


@pytest.fixture
def trail(guard_home: Path, tmp_path: Path) -> Path:
    guard("keys", "init")
    write(guard_home, 40)
    pin = tmp_path / "root.pub"
    guard("keys", "export-public", "-o", str(pin))
    return pin


def test_keys_commands(guard_home: Path, tmp_path: Path) -> None:
    out = guard("keys", "init").stdout
    assert "fingerprint: SHA256:" in out
    # following the README after a first `guard run` (which made the keys) is no error: nothing changes
    again = guard("keys", "init").stdout
    assert "already exist" in again and "nothing changed" in again
    assert "fingerprint: " + out.split("fingerprint: ", 1)[1].splitlines()[0] in again
    shown = json.loads(guard("keys", "show", "--json").stdout)
    assert shown["epoch"] == 0 and shown["fingerprint"] in out
    pin = tmp_path / "root.pub"
    guard("keys", "export-public", "-o", str(pin))
    assert pin.read_text().strip() == shown["key"]
    os.chmod(guard_home / "keys" / "epoch.key", 0o644)
    err = guard("keys", "show", check=1).stderr
    assert "epoch.key" in err and "chmod 0600" in err


def test_verify_valid_with_pin_and_note_without(trail: Path) -> None:
    pinned = guard("audit", "verify", "--key", str(trail))
    assert pinned.stdout.startswith("VALID:") and "auditor should pin" not in pinned.stderr
    unpinned = guard("audit", "verify")
    assert "an auditor pins it elsewhere" in unpinned.stderr and "--key root.pub" in unpinned.stderr
    report = json.loads(guard("audit", "verify", "--key", str(trail), "--json").stdout)
    assert report["status"] == "valid" and report["records"] == 42 and report["pinned"] is True


def test_verify_exit_codes_tamper_unsealed_usage(trail: Path, guard_home: Path, tmp_path: Path) -> None:
    seg = sorted((guard_home / "log").glob("seg-*.jsonl"))[0]
    line = b'{"action":{"kind":"file","op":"read","target":"/x"},"decision":{"verdict":"allow"},"seq":999,' \
           b'"session":"s","ts":"2026-01-01T00:00:00.000000Z","type":"decision"}\n'
    last = sorted((guard_home / "log").glob("seg-*.jsonl"))[-1]
    leaves = json.loads(guard("audit", "verify", "--key", str(trail), "--json").stdout)["leaves"]
    with open(last, "ab") as f:
        f.write(line.replace(b"999", str(leaves).encode()))
    unsealed = guard("audit", "verify", "--key", str(trail), check=3)
    assert "UNSEALED: 1 line(s)" in unsealed.stdout and "VALID" not in unsealed.stdout
    data = bytearray(seg.read_bytes())
    data[data.index(b"/w/f") + 3] ^= 1
    seg.write_bytes(bytes(data))
    tampered = guard("audit", "verify", "--key", str(trail), check=1)
    assert tampered.stdout.startswith("TAMPERED: first break at segment seg-00000000.jsonl, line ")
    assert "seq " in tampered.stdout.splitlines()[0]
    assert "No such" in guard("audit", "verify", "--key", str(tmp_path / "nope.pub"), check=2).stderr
    guard("audit", "verify", "--log", str(tmp_path / "missing"), "--key", str(trail), check=2)
    guard("audit", "verify", "--bogus", check=2)


def test_witness_checkpoint_catches_rollback(trail: Path, guard_home: Path, tmp_path: Path) -> None:
    older = tmp_path / "older"
    shutil.copytree(guard_home / "log", older)
    write(guard_home, 20)
    cp = tmp_path / "witness.cp"
    guard("audit", "checkpoint", "-o", str(cp))
    assert cp.read_text().startswith("guard.audit/")
    guard("audit", "verify", "--key", str(trail), "--witness", str(cp))
    shutil.rmtree(guard_home / "log")
    shutil.copytree(older, guard_home / "log")
    assert guard("audit", "verify", "--key", str(trail), check=0).stdout.startswith("VALID")
    out = guard("audit", "verify", "--key", str(trail), "--witness", str(cp), check=1).stdout
    assert "witness saw" in out


def test_prove_and_verify_receipt(trail: Path, tmp_path: Path) -> None:
    receipt = tmp_path / "r.json"
    guard("audit", "prove", "5", "-o", str(receipt))
    out = guard("audit", "verify-receipt", str(receipt), "--key", str(trail)).stdout
    assert out.startswith("VALID: record seq 5")
    doc = json.loads(receipt.read_text())
    doc["record"] = doc["record"].replace("/w/", "/x/")
    receipt.write_text(json.dumps(doc))
    assert "not included" in guard("audit", "verify-receipt", str(receipt), "--key", str(trail), check=1).stderr
    assert "not in the log" in guard("audit", "prove", "100000", "-o", str(receipt), check=1).stderr


def test_show_filters_and_json(trail: Path) -> None:
    table = guard("audit", "show", "--verdict", "deny").stdout.splitlines()
    assert table[0].split()[:3] == ["SEQ", "TIME", "SESSION"]
    assert len(table) == 1 + 10 and all(" deny " in row for row in table[1:])
    rows = [json.loads(x) for x in guard("audit", "show", "--session", "alpha", "--json").stdout.splitlines()]
    assert rows and all(r["session"] == "alpha" for r in rows)
    assert guard("audit", "show", "--since", "1h").stdout.count("\n") == 43
    assert guard("audit", "show", "--since", "2999-01-01T00:00:00Z").stdout.count("\n") == 1
    assert "expected e.g." in guard("audit", "show", "--since", "yesterday", check=2).stderr


def test_tail_and_follow(trail: Path, guard_home: Path) -> None:
    out = guard("audit", "tail", "-n", "3").stdout.splitlines()
    assert len(out) == 4 and "end" in out[-1]
    follower = subprocess.Popen([sys.executable, "-m", "guard", "audit", "tail", "-n", "0", "-f",
                                 "--interval", "0.05", "--for", "20"], stdout=subprocess.PIPE, text=True,
                                cwd=REPO)
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline().startswith("SEQ")
        time.sleep(0.5)
        write(guard_home, 3)
        seen = [follower.stdout.readline() for _ in range(5)]
        assert "start" in seen[0] and "/w/f0" in seen[1] and "end" in seen[4]
    finally:
        follower.kill()
        follower.wait()


def test_export_ocsf_and_jsonl(trail: Path, tmp_path: Path) -> None:
    events = [json.loads(x) for x in guard("audit", "export", "--format", "ocsf").stdout.splitlines()]
    assert len(events) == 40
    assert {e["class_uid"] for e in events} == {1001}
    assert {(e["action_id"], e["disposition_id"]) for e in events} == {(1, 1), (2, 2)}
    out = tmp_path / "all.jsonl"
    guard("audit", "export", "--format", "jsonl", "-o", str(out))
    lines = out.read_text().splitlines()
    assert len(lines) == 42 and all(json.loads(x)["type"] in ("session", "decision") for x in lines)


def test_vectors_through_the_cli() -> None:
    pin, witness = str(VECTORS / "root.pub"), str(VECTORS / "witness.checkpoint")
    guard("audit", "verify", "--log", str(VECTORS / "golden" / "log"), "--key", pin, "--witness", witness)
    out = guard("audit", "verify", "--log", str(VECTORS / "history-rewritten-with-epoch-key" / "log"),
                "--key", pin, check=1).stdout
    assert "root does not match" in out


def test_auditor_walkthrough_from_the_docs(trail: Path, tmp_path: Path) -> None:
    """The README/docs walkthrough, command by command: pin, verify, witness, prove, export."""
    pin = tmp_path / "pin.pub"
    guard("keys", "export-public", "-o", str(pin))
    guard("audit", "verify", "--key", str(pin))
    guard("audit", "checkpoint", "-o", str(tmp_path / "witness.cp"))
    guard("audit", "verify", "--key", str(pin), "--witness", str(tmp_path / "witness.cp"))
    guard("audit", "prove", "2", "-o", str(tmp_path / "r.json"))
    guard("audit", "verify-receipt", str(tmp_path / "r.json"), "--key", str(pin))
    guard("audit", "export", "--format", "ocsf", "-o", str(tmp_path / "events.ocsf.jsonl"))
    assert (tmp_path / "events.ocsf.jsonl").stat().st_size > 0
