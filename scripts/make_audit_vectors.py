#!/usr/bin/env python3
"""Regenerate tests/vectors/audit: a golden signed log and one tampered twin per attack.

Keys come from fixed seeds and time from a counter, so the output is byte-for-byte reproducible; the test
suite regenerates into a temporary directory and compares. Each twin is what an attacker with the stated
capability could produce at best (re-signing everything it holds a key for), and manifest.json says which
finding `guard audit verify` must report first.

    python3 scripts/make_audit_vectors.py [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from guard.audit.canon import encode
from guard.audit.chain import epoch_key_name, origin_for
from guard.audit.events import decision_event, session_event
from guard.audit.keys import Keyring
from guard.audit.merkle import Frontier, leaf_hash
from guard.audit.note import Checkpoint, VerifierKey, parse_note, public_bytes, sign_checkpoint
from guard.audit.writer import AuditWriter
from guard.model import Action, Decision, Op, Verdict

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
WRITER = {"checkpoint_every": 4, "checkpoint_interval": 3600.0, "epoch_checkpoints": 3, "epoch_seconds": 1e9,
          "segment_max_bytes": 2048}


class Clock:
    def __init__(self, start: float) -> None:
        self.t = start

    def __call__(self) -> float:
        self.t += 0.125
        return self.t


class Keys:
    """Deterministic Ed25519 keys: call n returns the key for seed `label/n`."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.made: list[Ed25519PrivateKey] = []

    def __call__(self) -> Ed25519PrivateKey:
        seed = hashlib.sha256(f"guard-vectors/{self.label}/{len(self.made)}".encode()).digest()
        key = Ed25519PrivateKey.from_private_bytes(seed)
        self.made.append(key)
        return key

    def epoch(self, n: int) -> Ed25519PrivateKey:
        return self.made[n + 1]  # made[0] is the root key


def events(session: str, n: int, salt: str = "") -> list[dict[str, object]]:
    ops = [
        (Action(Op.READ, f"/home/dev/project/src/mod{salt}.py", pid=4101, exe="/usr/bin/python3",
                argv=("python3", "-m", "pytest")),
         Decision(Verdict.ALLOW, "workspace-read", "inside workspace")),
        (Action(Op.READ, "/home/dev/.ssh/id_ed25519", pid=4101, exe="/usr/bin/cat",
                argv=("cat", "/home/dev/.ssh/id_ed25519")), Decision(Verdict.DENY, "secrets", "SSH keys")),
        (Action(Op.WRITE, f"/home/dev/project/build/out{salt}.o", pid=4102, exe="/usr/bin/cc"),
         Decision(Verdict.ALLOW, "workspace-write", "inside workspace")),
        (Action(Op.EXEC, "/usr/bin/git", pid=4103, exe="/usr/bin/git", argv=("git", "status")),
         Decision(Verdict.ALLOW, "tools", "developer tools")),
        (Action(Op.RUN, "git push --force", pid=4103, argv=("git", "push", "--force")),
         Decision(Verdict.DENY, "no-force-push", "force pushes rewrite history")),
        (Action(Op.CONNECT, "pypi.org:443", pid=4104, addresses=("151.101.0.223",)),
         Decision(Verdict.ALLOW, "package-index", "package downloads")),
        (Action(Op.CONNECT, "169.254.169.254:80", pid=4104, addresses=("169.254.169.254",)),
         Decision(Verdict.DENY, None, "network default: deny")),
        (Action(Op.WRITE, "/home/dev/.bashrc", pid=4105, exe="/usr/bin/sed"),
         Decision(Verdict.DENY, "dotfiles", "shell startup files", audit_only=True)),
    ]
    out: list[dict[str, object]] = [session_event(session, "start", policy="coding-agent",
                                                  workspace="/home/dev/project")]
    for i in range(n):
        action, decision = ops[i % len(ops)]
        out.append(decision_event(session, action, decision))
        if i % 11 == 5:
            out.append({"type": "approval", "session": session, "request": f"req-{i}", "answer": "deny",
                        "by": "dev"})
        if i % 13 == 7:
            out.append({"type": "connection", "session": session, "target": "pypi.org:443", "bytes_out": 812,
                        "bytes_in": 90211, "verdict": "allow", "duration_ms": 412})
    # A file name and an argv word that are not UTF-8 (a Latin-1 name, a stray 0xff): recorded as
    # {"b64": ...}, so an independent verifier sees the tagged form in the golden log.
    odd = os.fsdecode(f"/home/dev/project/caf\xe9{salt}.txt".encode("latin-1"))
    out.append(decision_event(session, Action(Op.WRITE, odd, pid=4106, exe="/usr/bin/touch",
                                              argv=("touch", odd, os.fsdecode(b"\xff"))),
                              Decision(Verdict.ALLOW, "workspace-write", "inside workspace")))
    out.append(session_event(session, "end", exit_status=0, duration_ms=5250))
    return out


def build_log(home: Path, keys: Keys, session: str, phases: list[int], salt: str = "",
              snapshot_after: int | None = None, snapshot_to: Path | None = None) -> None:
    clock = Clock(T0)
    Keyring(home).init(now=clock(), new_key=keys)
    for p, n in enumerate(phases):
        with AuditWriter(home, now=clock, new_key=keys, **WRITER) as w:
            for ev in events(f"{session}-{p}", n, salt):
                w.append(ev)
        if snapshot_after == p and snapshot_to is not None:
            shutil.copytree(home, snapshot_to)


# -- the attacker's toolkit ----------------------------------------------------------------------------------
Segs = list[tuple[str, list[bytes]]]


def load(log: Path) -> Segs:
    return [(p.name, p.read_bytes().split(b"\n")[:-1]) for p in sorted(log.glob("seg-*.jsonl"))]


def save(segs: Segs, log: Path) -> None:
    log.mkdir(parents=True)
    for name, lines in segs:
        (log / name).write_bytes(b"".join(line + b"\n" for line in lines))


def flat(segs: Segs) -> list[tuple[int, int]]:
    return [(s, i) for s, (_n, lines) in enumerate(segs) for i in range(len(lines))]


def obj(line: bytes) -> dict[str, object]:
    return json.loads(line)


def renumber(segs: Segs) -> None:
    """Rewrite every record's seq to its position (what a careful deleter does)."""
    idx = 0
    for _name, lines in segs:
        for i, line in enumerate(lines):
            o = obj(line)
            if o["type"] not in ("checkpoint", "epoch"):
                o["seq"] = idx
                lines[i] = encode(o)
            idx += 1


def reseal(segs: Segs, signer: Callable[[str], Ed25519PrivateKey | None]) -> None:
    """Recompute roots and re-sign every checkpoint/certificate whose signing key `signer` yields."""
    frontier = Frontier()
    for _name, lines in segs:
        for i, line in enumerate(lines):
            o = obj(line)
            if o["type"] in ("checkpoint", "epoch"):
                note = parse_note(str(o["note"]))
                name = note.signatures[0].name
                key = signer(name)
                if key is not None:
                    cp = note.checkpoint
                    fresh = Checkpoint(cp.origin, frontier.size, frontier.root(), cp.extensions)
                    o = {"epoch": o["epoch"], "note": sign_checkpoint(fresh, name, key), "seq": frontier.size,
                         "type": o["type"]}
                    lines[i] = encode(o)
            frontier.append(leaf_hash(lines[i]))


def epoch_signer(origin: str, keys: Keys, epochs: set[int]) -> Callable[[str], Ed25519PrivateKey | None]:
    by_name = {epoch_key_name(origin, e): keys.epoch(e) for e in epochs}
    return by_name.get


def recertify(segs: Segs, origin: str, epoch: int, new: Ed25519PrivateKey,
              signer: Ed25519PrivateKey) -> None:
    """Swap the key epoch `epoch` certifies for `new`, signed by `signer` under the previous epoch's name."""
    s, i = find(segs, lambda o: o["type"] == "epoch" and o["epoch"] == epoch)[0]
    o = obj(segs[s][1][i])
    cp = parse_note(str(o["note"])).checkpoint
    vkey = VerifierKey(epoch_key_name(origin, epoch), public_bytes(new)).encode()
    ext = tuple(x if not x.startswith("guard-epoch ") else f"guard-epoch {epoch} {vkey}"
                for x in cp.extensions)
    o["note"] = sign_checkpoint(Checkpoint(cp.origin, cp.size, cp.root, ext),
                                epoch_key_name(origin, epoch - 1), signer)
    segs[s][1][i] = encode(o)


def find(segs: Segs, pred: Callable[[dict[str, object]], bool]) -> list[tuple[int, int]]:
    return [(s, i) for s, i in flat(segs) if pred(obj(segs[s][1][i]))]


def make(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    work = out.parent / (out.name + ".work")
    if work.exists():
        shutil.rmtree(work)
    keys = Keys("golden")
    home = work / "home"
    build_log(home, keys, "s", [16, 16], snapshot_after=0, snapshot_to=work / "older")
    origin = origin_for(public_bytes(keys.made[0]))
    golden = load(home / "log")
    final_epoch = max(int(str(obj(line)["epoch"])) for _n, ls in golden for line in ls
                      if obj(line)["type"] == "epoch")
    root_pub = (home / "keys" / "root.pub").read_bytes()
    manifest: dict[str, dict[str, object]] = {}

    def twin(name: str, segs: Segs, first: str, description: str, *, witness: bool = False,
             also: tuple[str, ...] = (), pub: bytes | None = None,
             exit_without_witness: int | None = None) -> None:
        d = out / name
        save(segs, d / "log")
        (d / "keys").mkdir()
        (d / "keys" / "root.pub").write_bytes(pub if pub is not None else root_pub)
        manifest[name] = {"first": first, "also": list(also), "witness": witness, "description": description,
                          "exit_without_witness": exit_without_witness}

    # golden
    save(golden, out / "golden" / "log")
    (out / "golden" / "keys").mkdir()
    (out / "golden" / "keys" / "root.pub").write_bytes(root_pub)
    (out / "root.pub").write_bytes(root_pub)  # the auditor's pin
    last_note = next(str(obj(line)["note"]) for _n, ls in reversed(golden) for line in reversed(ls)
                     if obj(line)["type"] in ("checkpoint", "epoch"))
    (out / "witness.checkpoint").write_text(last_note)

    def copy() -> Segs:
        return [(n, list(ls)) for n, ls in golden]

    decisions = find(golden, lambda o: o["type"] == "decision")
    mid = decisions[len(decisions) // 3]

    segs = copy()
    line = bytearray(segs[mid[0]][1][mid[1]])
    pos = line.index(b'"target":"') + 12
    line[pos] ^= 0x01
    segs[mid[0]][1][mid[1]] = bytes(line)
    twin("flipped-byte", segs, "root-mismatch", "one byte of a sealed record's target changed")

    segs = copy()
    del segs[mid[0]][1][mid[1]]
    twin("record-deleted", segs, "bad-seq", "a sealed record removed from the middle",
         also=("checkpoint-size",))

    segs = copy()
    ls = segs[mid[0]][1]
    ls[mid[1]], ls[mid[1] + 1] = ls[mid[1] + 1], ls[mid[1]]
    twin("records-swapped", segs, "bad-seq", "two adjacent sealed records swapped", also=("root-mismatch",))

    other = work / "other"
    build_log(other, Keys("elsewhere"), "x", [30], salt="-other")
    foreign = {obj(line)["seq"]: line for _n, ls in load(other / "log") for line in ls}
    segs = copy()
    seq = obj(segs[mid[0]][1][mid[1]])["seq"]
    replay = next(s for s in sorted(foreign) if s >= seq and obj(foreign[s])["type"] == "decision")
    target = next((s, i) for s, i in flat(segs) if obj(segs[s][1][i])["seq"] == replay)
    segs[target[0]][1][target[1]] = foreign[replay]
    twin("record-replayed", segs, "root-mismatch", "a record from another guard log (same seq) put in place")

    segs = copy()
    s, i = find(segs, lambda o: o["type"] == "checkpoint")[2]
    o = obj(segs[s][1][i])
    note = parse_note(str(o["note"]))
    stranger = Keys("stranger")()
    o["note"] = sign_checkpoint(note.checkpoint, note.signatures[0].name, stranger)
    segs[s][1][i] = encode(o)
    twin("checkpoint-resigned", segs, "bad-signature",
         "a checkpoint re-signed with another key under the same name")

    segs = copy()
    s, i = find(segs, lambda o: o["type"] == "epoch" and o["epoch"] == 2)[0]
    del segs[s][1][i]
    twin("epoch-cert-removed", segs, "bad-seq", "the epoch 2 certificate line deleted",
         also=("epoch-mismatch", "checkpoint-size"))

    segs = copy()
    forged = Keys("forger")
    fkeys = {e: forged() for e in range(2, final_epoch + 1)}
    impostor = forged()
    for e in range(2, final_epoch + 1):  # epoch 2 for a forger's key, then the forger chains its own keys
        signer = impostor if e == 2 else fkeys[e - 1]  # it never held the real epoch 1 key
        recertify(segs, origin, e, fkeys[e], signer)
    reseal(segs, {epoch_key_name(origin, e): k for e, k in fkeys.items()}.get)
    twin("epoch-cert-forged", segs, "bad-signature",
         "epoch 2 certified for a forger's key, and everything after re-signed with the forger's chain")

    segs = copy()
    assert len(segs) >= 3, "golden log needs at least 3 segments"
    del segs[1]
    twin("segment-deleted", segs, "segment-missing", "the second segment file removed", also=("bad-seq",))

    segs = copy()
    cert_n = find(segs, lambda o: o["type"] == "epoch" and o["epoch"] == final_epoch)[0]
    victim = next((s, i) for s, i in reversed(flat(segs)) if (s, i) < cert_n
                  and obj(segs[s][1][i])["type"] == "decision")
    o = obj(segs[victim[0]][1][victim[1]])
    o["decision"] = {**o["decision"], "verdict": "allow", "reason": "rewritten"}  # type: ignore[dict-item]
    segs[victim[0]][1][victim[1]] = encode(o)
    reseal(segs, epoch_signer(origin, keys, {final_epoch}))
    twin("history-rewritten-with-epoch-key", segs, "root-mismatch",
         f"a record before epoch {final_epoch} rewritten by a thief holding the epoch {final_epoch} key, who "
         "re-signed every checkpoint that key can sign")

    segs = copy()
    last_cp = [(s, i) for s, i in flat(segs) if obj(segs[s][1][i])["type"] in ("checkpoint", "epoch")][-4]
    segs = [(n, ls[: last_cp[1] + 1] if s == last_cp[0] else ls) for s, (n, ls) in enumerate(segs)
            if s <= last_cp[0]]
    twin("tail-truncated", segs, "truncated", "the log cut after an older checkpoint (clean cut, sealed)",
         witness=True, exit_without_witness=0)

    older = work / "older"
    twin("rolled-back", load(older / "log"), "truncated", "the whole log replaced by an older copy",
         witness=True, exit_without_witness=0)

    clock = Clock(T0 + 10_000)
    with AuditWriter(older, now=clock, new_key=Keys("regrow"), **WRITER) as w:
        for ev in events("regrown", 40, "-regrown"):
            w.append(ev)
    twin("rolled-back-regrown", load(older / "log"), "witness-mismatch",
         "an older copy restored with its old epoch key from a backup, then regrown past the witnessed size",
         witness=True, exit_without_witness=0)

    thief = work / "thief"
    tkeys = Keys("thief")
    build_log(thief, tkeys, "s", [16, 16])
    twin("key-file-substituted", load(thief / "log"), "origin",
         "keys/root.pub replaced and the whole log re-made under the substitute root key",
         pub=(thief / "keys" / "root.pub").read_bytes(), exit_without_witness=0)

    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(work)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests/vectors/audit")
    args = ap.parse_args()
    make(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
