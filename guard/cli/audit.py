"""`guard audit`: verify the signed trail, hand checkpoints to witnesses, prove records, read and export.

Only parsing, feeding files to the pure verifier, and rendering live here. Exit codes of `verify`:
0 valid and sealed, 1 tampering, 3 records after the last checkpoint (unsealed), 2 usage or I/O.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import orjson

from guard.audit.canon import parse_ts
from guard.audit.export import iter_records, to_ocsf
from guard.audit.keys import Keyring, fingerprint, read_pinned_key
from guard.audit.note import VerifierKey
from guard.audit.receipt import build_receipt, encode_receipt, load_receipt, verify_receipt
from guard.audit.segments import SEGMENT_RE, read_witness, verify_log
from guard.audit.verify import Report
from guard.cli.output import say
from guard.errors import AuditError, GuardError, KeyringError, UsageError
from guard.home import guard_home, log_dir
from guard.text import json_for_terminal, shown

MAX_LISTED = 20


def _log(path: Path | None) -> Path:
    return path if path is not None else log_dir(guard_home())


def _root_key(pin: Path | None) -> VerifierKey:
    if pin is not None:
        return read_pinned_key(pin)
    try:
        key = Keyring(guard_home()).root()
    except KeyringError as exc:
        raise UsageError(exc.message, hint=exc.hint or "pass the auditor's pinned key with --key") from None
    say(f"note: using the root key in $GUARD_HOME ({fingerprint(key)}); an auditor pins it elsewhere "
        "instead (guard keys export-public -o root.pub) and verifies with: guard audit verify --key root.pub",
        err=True)
    return key


def _write(output: Path, data: bytes) -> None:
    if str(output) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    try:
        output.write_bytes(data)
    except OSError as exc:
        raise UsageError(f"{output}: cannot write: {exc.strerror}") from None


@click.group()
def audit() -> None:
    """Verify, prove, read and export the signed audit trail."""


_log_opt = click.option("--log", "log", type=click.Path(file_okay=False, path_type=Path),
                        help="Log directory (default: $GUARD_HOME/log).")


@audit.command("verify")
@_log_opt
@click.option("--key", "key", type=click.Path(dir_okay=False, path_type=Path),
              help="The pinned root public key (from `guard keys export-public`).")
@click.option("--witness", type=click.Path(dir_okay=False, path_type=Path),
              help="A checkpoint a witness kept: a shorter or different log is tampering.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
def verify_cmd(log: Path | None, key: Path | None, witness: Path | None, as_json: bool) -> None:
    """Check every record, the Merkle tree, checkpoint signatures and the epoch key chain."""
    root = _root_key(key)
    witnessed = read_witness(witness) if witness is not None else None
    try:
        report = verify_log(_log(log), root.public, witness=witnessed)
    except AuditError as exc:
        raise UsageError(exc.message, hint=exc.hint) from None
    if as_json:
        out = report.to_dict()
        out["root_key"] = fingerprint(root)
        out["pinned"] = key is not None
        click.echo(orjson.dumps(out).decode())
    else:
        _render(report)
    sys.exit(report.exit_code)


def _render(report: Report) -> None:
    first = report.first_break
    if first is not None:
        say(f"TAMPERED: first break at {first.where()}: {first.message}")
        others = [f for f in report.findings if f is not first]
        if others:
            say("also found:")
            for f in others[:MAX_LISTED]:
                tag = "" if f.tampering else " (not tampering)"
                say(f"  - {f}{tag}")
            more = report.findings_total - 1 - min(len(others), MAX_LISTED)
            if more > 0:
                say(f"  ... and {more} more (use --json for all kept findings)")
    # every line is a leaf of the tree (seq numbers count lines): records, checkpoints and epoch keys alike
    summary = (f"{report.leaves} lines in {report.segments} segment(s) ({report.records} records, "
               f"{report.checkpoints} checkpoints, {report.epochs} epoch key(s)), "
               f"root {report.root.hex()[:16]}…")
    if report.witness_size is not None:
        summary += (f"; the witnessed tree of {report.witness_size} lines is a prefix of it"
                    if first is None else "")
    if first is None and report.exit_code == 0:
        say(f"VALID: {summary}; every line is sealed")
        return
    if first is None:
        say(f"NOT FULLY SEALED: {summary}")
    else:
        say(summary)
    if report.unsealed:
        say(f"UNSEALED: {report.unsealed} line(s) after the last checkpoint (from seq "
            f"{report.sealed + 1}) are not proven valid")
    if report.torn_tail is not None:
        t = report.torn_tail
        say(f"TORN: segment {t.segment} line {t.line} ends in {t.size} bytes without a newline "
            "(a crash mid-append; not a record)")


@audit.command("checkpoint")
@_log_opt
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the latest signed checkpoint ('-' for stdout).")
def checkpoint_cmd(log: Path | None, output: Path) -> None:
    """Write the latest signed checkpoint, for a witness to keep (after verifying the log)."""
    root = _root_key(None)
    report = verify_log(_log(log), root.public)
    if report.tampered:
        raise AuditError(f"the log fails verification ({report.first_break}); not exporting a checkpoint",
                         hint="run 'guard audit verify'")
    if report.last_note is None:
        raise AuditError("the log has no checkpoint yet")
    _write(output, report.last_note.encode())
    say(f"checkpoint at tree size {report.sealed} written to {output}", err=True)


@audit.command("prove")
@_log_opt
@click.argument("seq", type=int)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the receipt ('-' for stdout).")
def prove_cmd(log: Path | None, seq: int, output: Path) -> None:
    """Write a receipt for record SEQ: the record, its inclusion proof, checkpoint and key chain."""
    receipt = build_receipt(_log(log), seq)
    root = _root_key(None)
    verify_receipt(receipt, root)  # never hand out a receipt that does not check
    _write(output, encode_receipt(receipt))
    say(f"receipt for seq {seq} (tree size {receipt['tree_size']}) written to {output}", err=True)


@audit.command("verify-receipt")
@click.argument("receipt", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--key", "key", type=click.Path(dir_okay=False, path_type=Path),
              help="The pinned root public key.")
@click.option("--json", "as_json", is_flag=True, help="Print the proven record as JSON.")
def verify_receipt_cmd(receipt: Path, key: Path | None, as_json: bool) -> None:
    """Check a receipt alone, with only the root public key."""
    root = _root_key(key)
    check = verify_receipt(load_receipt(receipt), root)
    if as_json:
        click.echo(orjson.dumps({"valid": True, "seq": check.seq, "tree_size": check.tree_size,
                                 "epoch": check.epoch, "record": check.record}).decode())
        return
    say(f"VALID: record seq {check.seq} is in the log {check.origin} at tree size {check.tree_size}, "
        f"sealed by the epoch {check.epoch} key")
    say(_row(check.record))


# -- reading ------------------------------------------------------------------------------------------------
_REL = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, *, now: float) -> float:
    """`10m`, `2h`, `1d` (ago) or an ISO 8601 time (UTC unless it says otherwise)."""
    m = _REL.match(text.strip())
    if m:
        return now - int(m.group(1)) * _UNITS[m.group(2)]
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since {text!r}: expected e.g. 10m, 2h, 1d or 2025-01-31T12:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def _row_fields(r: dict[str, Any]) -> list[str]:
    """The table's columns for one record, each escaped (guard.text.shown): agent-controlled text with
    terminal sequences or newlines cannot erase, recolour or forge a row."""
    action, decision = r.get("action") or {}, r.get("decision") or {}
    if not isinstance(action, dict):
        action = {}
    if not isinstance(decision, dict):
        decision = {}
    verdict = shown(_verdict_of(r) or "")
    if decision.get("audit_only") or r.get("audit_only") is True:
        verdict += "(audit)"
    what = action.get("op", r.get("event", r.get("protocol", r.get("type", ""))))
    target = action.get("target", r.get("target", r.get("host", "")))
    if r.get("type") == "connection" and "target" not in r and isinstance(r.get("port"), int):
        target = f"{shown(target)}:{r['port']}"
    if r.get("type") == "recovery":
        target = f"torn {r.get('torn_bytes')} bytes in {r.get('segment')}"
    return [_field(r.get("seq", "")), _field(str(r.get("ts", ""))[:19]) + "Z",
            _field(r.get("session", ""))[:12], _field(r.get("type", "")), verdict, _field(what),
            _field(target), _field(decision.get("rule_id") or r.get("rule_id") or "")]


def _verdict_of(r: dict[str, Any]) -> str | None:
    """A record's verdict: a decision's, or the one a connection or approval record carries itself (a
    connection the proxy refused is a deny, and `--verdict deny` must list it)."""
    decision = r.get("decision")
    if isinstance(decision, dict):
        value = decision.get("verdict")
    elif r.get("type") in ("connection", "approval"):
        value = r.get("verdict")
    else:
        return None
    return value if isinstance(value, str) else None


def _field(value: Any) -> str:
    """A recorded value (a string, a tagged byte string, or anything else) as one escaped cell."""
    if isinstance(value, str | dict):
        return shown(value)
    return shown(str(value))


_HEAD = ["SEQ", "TIME", "SESSION", "TYPE", "VERDICT", "OP", "TARGET", "RULE"]
_WIDTHS = [7, 20, 12, 10, 12, 8, 48, 0]


def _fmt(fields: list[str]) -> str:
    """Fixed-width columns; a long cell loses its middle, not its end, because the end of a path (the file)
    or of a command line (its arguments) is what a reader must not miss."""
    out = []
    for value, width in zip(fields, _WIDTHS, strict=True):
        if width and len(value) > width:
            head = (width - 1) // 3
            value = value[:head] + "…" + value[len(value) - (width - 1 - head):]
        out.append(value.ljust(width) if width else value)
    return " ".join(out).rstrip()


def _row(r: dict[str, Any]) -> str:
    return _fmt(_row_fields(r))


def _matches(r: dict[str, Any], session: str | None, verdict: str | None, since: float | None) -> bool:
    if session is not None and r.get("session") != session:
        return False
    if verdict is not None and _verdict_of(r) != verdict:
        return False
    if since is not None:
        try:
            return parse_ts(str(r.get("ts"))) >= since
        except ValueError:
            return False
    return True


@audit.command("show")
@_log_opt
@click.option("--session", help="Only this session.")
@click.option("--verdict", type=click.Choice(["allow", "ask", "deny"]), help="Only this verdict.")
@click.option("--since", help="Only records since: 10m, 2h, 1d, or an ISO 8601 time.")
@click.option("--json", "as_json", is_flag=True, help="One canonical JSON record per line.")
def show_cmd(log: Path | None, session: str | None, verdict: str | None, since: str | None,
             as_json: bool) -> None:
    """A readable table of records (does not verify: run `guard audit verify` for that)."""
    since_t = parse_since(since, now=time.time()) if since else None
    tty = sys.stdout.isatty()
    if not as_json:
        say(_fmt(_HEAD))
    for data, r in iter_records(_log(log)):
        if _matches(r, session, verdict, since_t):
            if as_json:
                _echo_json(data, tty)
            else:
                say(_row(r))


def _echo_json(data: bytes, tty: bool) -> None:
    """A record line for tools: its exact canonical bytes; on a terminal, the same JSON value with every
    character a terminal could act on written as a `\\u` escape (guard.text.json_for_terminal)."""
    if tty:
        click.echo(json_for_terminal(data.decode("utf-8")))
    else:
        click.echo(data)


def session_starts(log: Path) -> list[str]:
    """Ids of the sessions the trail saw start, in order (one streaming pass; records are not kept)."""
    return [str(r.get("session")) for _data, r in iter_records(log)
            if r.get("type") == "session" and r.get("event") == "start"]


def select_session(starts: list[str], wanted: str | None) -> str:
    """The session id a report is about: WANTED (an id or a unique prefix) or the latest one started."""
    if wanted is None:
        if not starts:
            raise UsageError("the trail holds no session yet", hint="run one: guard run -- COMMAND")
        return starts[-1]
    found = sorted({s for s in starts if s.startswith(wanted)} | ({wanted} if wanted in starts else set()))
    if len(found) == 1:
        return found[0]
    if not found:
        raise UsageError(f"no session {wanted!r} in the trail",
                         hint="list them: guard audit show | grep start")
    raise UsageError(f"session prefix {wanted!r} is ambiguous: {', '.join(found[:5])}",
                     hint="give more of the id")


def _verification(log: Path, key: Path | None) -> Any:
    from guard.audit.report import verification_from

    try:
        root = _root_key(key)
    except GuardError as exc:
        return verification_from(None, reason=f"no root key to verify with ({exc.message}); "
                                              "pass --key root.pub")
    try:
        return verification_from(verify_log(log, root.public).to_dict())
    except AuditError as exc:
        return verification_from(None, reason=f"the verifier could not run: {exc.message}")


@audit.command("report")
@_log_opt
@click.argument("session", required=False)
@click.option("--since", help="Every session's records since: 10m, 2h, 1d, or an ISO 8601 time.")
@click.option("--key", "key", type=click.Path(dir_okay=False, path_type=Path),
              help="The pinned root public key the trail is verified with.")
@click.option("--json", "as_json", is_flag=True, help="The report model as JSON.")
@click.option("--html", "as_html", is_flag=True, help="One self-contained HTML page (use with -o).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("-"),
              help="Where to write the report (default stdout).")
def report_cmd(log: Path | None, session: str | None, since: str | None, key: Path | None, as_json: bool,
               as_html: bool, output: Path) -> None:
    """What a session did: files, commands, network, denials, asks, a time line; and whether the trail
    verified. SESSION is an id or prefix (default: the latest session); --since reports every session
    since a time instead. Exit 1 when the trail fails verification (the report is still written)."""
    from guard.audit.report import build_report
    from guard.audit.report_render import render_html, render_json, render_text

    if as_json and as_html:
        raise UsageError("--json and --html are exclusive")
    if session is not None and since is not None:
        raise UsageError("give a SESSION or --since, not both")
    path = _log(log)
    if since is not None:
        since_t = parse_since(since, now=time.time())
        starts = {r.get("session"): r for _d, r in iter_records(path)
                  if r.get("type") == "session" and r.get("event") == "start"}
        window = [r for _d, r in iter_records(path) if r.get("session") != "daemon"
                  and _matches(r, None, None, since_t)]
        # a session that started before the window still needs its start (its workspace, its command)
        shown = {r.get("session") for r in window if r.get("type") == "session" and r.get("event") == "start"}
        earlier = [starts[s] for s in dict.fromkeys(r.get("session") for r in window)
                   if s not in shown and s in starts]
        chosen = iter(earlier + window)
    else:
        sid = select_session(session_starts(path), session)
        chosen = (r for _d, r in iter_records(path) if r.get("session") == sid)
    verification = _verification(path, key)
    model = build_report(chosen, verification)
    if as_html:
        data = render_html(model).encode()
    elif as_json:
        data = render_json(model)
    else:
        data = render_text(model).encode()
    _write(output, data)
    if str(output) != "-":
        click.echo(f"report of {model.summary.sessions} session(s) written to {output}", err=True)
    sys.exit(1 if verification.status == "tampered" else 0)


def _follow(log: Path, interval: float, stop_after: float | None) -> Iterator[bytes]:
    """Yield complete lines appended to the log from now on, polling every `interval` seconds."""
    def segments() -> list[tuple[int, Path]]:
        try:
            names = os.listdir(log)
        except OSError:
            return []
        return sorted((int(m.group(1)), log / n) for n in names if (m := SEGMENT_RE.match(n)))

    segs = segments()
    index, offset = (segs[-1][0], segs[-1][1].stat().st_size) if segs else (0, 0)
    partial = b""
    deadline = None if stop_after is None else time.monotonic() + stop_after
    while deadline is None or time.monotonic() < deadline:
        for seg_index, path in segments():
            if seg_index < index:
                continue
            if seg_index > index:
                index, offset, partial = seg_index, 0, b""
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
            except OSError:
                continue
            offset += len(chunk)
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop()
            yield from lines
        time.sleep(interval)


@audit.command("tail")
@_log_opt
@click.option("-n", "count", default=20, show_default=True, help="How many recent records to show first.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing records as they are appended.")
@click.option("--interval", default=0.5, show_default=True, help="Polling interval for -f, in seconds.")
@click.option("--for", "stop_after", type=float, default=None, help="Stop following after this many seconds.")
def tail_cmd(log: Path | None, count: int, follow: bool, interval: float, stop_after: float | None) -> None:
    """The most recent records; with -f, keep following (bounded polling, no busy loop)."""
    if interval <= 0:
        raise UsageError("--interval must be positive")
    path = _log(log)
    recent: list[dict[str, Any]] = []
    for _data, r in iter_records(path):
        recent.append(r)
        if len(recent) > count:
            recent.pop(0)
    say(_fmt(_HEAD))
    for r in recent:
        say(_row(r))
    if not follow:
        return
    try:
        for line in _follow(path, interval, stop_after):
            try:
                r = orjson.loads(line)
            except ValueError:
                continue
            if isinstance(r, dict) and r.get("type") not in ("checkpoint", "epoch"):
                say(_row(r))
    except KeyboardInterrupt:
        return


@audit.command("export")
@_log_opt
@click.option("--format", "fmt", type=click.Choice(["ocsf", "jsonl"]), required=True,
              help="ocsf: OCSF 1.1 events for SIEMs; jsonl: the records as written.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("-"),
              help="Output file (default stdout); appended to when --cursor is given.")
@click.option("--follow", is_flag=True, help="Keep exporting records as they are appended (stop with ^C "
                                             "or SIGTERM; the cursor is saved after every batch).")
@click.option("--cursor", "cursor_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Resume after the last record this file says was exported, and keep it up to date.")
@click.option("--interval", default=0.5, show_default=True, help="Polling interval for --follow, in seconds.")
@click.option("--for", "stop_after", type=float, default=None, help="Stop following after this many seconds.")
def export_cmd(log: Path | None, fmt: str, output: Path, follow: bool, cursor_path: Path | None,
               interval: float, stop_after: float | None) -> None:
    """Export records for a SIEM (run `guard audit verify` first: export does not verify).

    With --cursor FILE the export is resumable: each batch is written and flushed, then FILE records the
    last exported seq (atomically), so a stopped and restarted export neither repeats nor skips a record.
    A crash between the two can repeat that one batch; OCSF events carry the seq as metadata.uid.
    """
    import signal
    import socket

    from guard.audit.export import Cursor, Follower, read_cursor, write_cursor

    if interval <= 0:
        raise UsageError("--interval must be positive")
    out = sys.stdout.buffer if str(output) == "-" else None
    try:  # a resumable export appends to what it exported before; a one-shot export replaces the file
        fh = out or open(output, "ab" if cursor_path is not None else "wb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise UsageError(f"{output}: cannot write: {exc.strerror}") from None
    device = {"hostname": socket.gethostname()}
    follower = Follower(_log(log), read_cursor(cursor_path) if cursor_path is not None else Cursor())
    stop = {"now": False}

    def on_term(_signum: int, _frame: object) -> None:
        stop["now"] = True

    # ^C and SIGTERM only set a flag: a batch is always written whole and its cursor saved before stopping
    previous = {sig: signal.signal(sig, on_term) for sig in (signal.SIGTERM, signal.SIGINT)} if follow else {}
    count = 0
    deadline = None if stop_after is None else time.monotonic() + stop_after
    tty = out is not None and sys.stdout.isatty()  # a person reading it: nothing the terminal acts on
    try:
        while True:
            batch = follower.poll()
            lines = []
            for data, r in batch:
                if fmt == "jsonl":
                    line = data
                else:
                    event = to_ocsf(r, device=device)
                    if event is None:
                        continue
                    line = orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
                shown_line = json_for_terminal(line.decode("utf-8")).encode("utf-8") if tty else line
                lines.append(shown_line + b"\n")
            if lines:
                fh.write(b"".join(lines))
                count += len(lines)
            fh.flush()
            if cursor_path is not None and (batch or not cursor_path.exists()):
                write_cursor(cursor_path, follower.cursor)
            if not follow or stop["now"] or (deadline is not None and time.monotonic() >= deadline):
                break
            _sleep_unless(stop, interval, deadline)  # then one more poll, so nothing appended is left
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if out is None:
            fh.close()
        else:
            fh.flush()
    say(f"exported {count} event(s) as {fmt}" + (f"; cursor at seq {follower.cursor.seq}"
                                                         if cursor_path is not None else ""), err=True)


def _sleep_unless(stop: dict[str, bool], interval: float, deadline: float | None) -> None:
    """Sleep up to `interval` (not past the deadline), waking early when SIGTERM arrives."""
    end = time.monotonic() + interval
    if deadline is not None:
        end = min(end, deadline)
    while not stop["now"] and time.monotonic() < end:
        time.sleep(min(0.05, max(0.0, end - time.monotonic())))
