"""The three renderings of a SessionReport: text for a terminal, JSON for tools, one self-contained HTML page.

Pure string building. Every agent-controlled string goes through `shown()` before it reaches a terminal or
a page: control characters, ANSI escapes, bidirectional overrides and undecodable bytes come out as visible
escapes, never raw. The HTML page loads nothing (a Content-Security-Policy forbids every fetch), has inline
CSS only and no script.
"""

from __future__ import annotations

import html
import shlex
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from guard.audit.report import Destination, SessionReport, Summary
from guard.text import shown

# The page may fetch nothing: no scripts, images, fonts or frames; only its own inline style.
CSP = "default-src 'none'; style-src 'unsafe-inline'"

# (key in Summary, label) in the order people read them; the page and the text show the same numbers.
SUMMARY_FIELDS: tuple[tuple[str, str], ...] = (
    ("denied", "denied"), ("audit_only_denied", "denied in audit mode (let through)"), ("asked", "asked"),
    ("allowed", "allowed"), ("outside_workspace", "actions outside the workspace"),
    ("files_written", "files written"), ("directories", "directories"), ("command_runs", "command runs"),
    ("commands", "distinct commands"), ("destinations", "network destinations"),
    ("connections", "connections"), ("refused_connections", "connections refused"),
    ("bytes_up", "bytes sent"), ("bytes_down", "bytes received"), ("tool_calls", "tool calls"),
    ("sessions", "sessions"), ("records", "records"),
)


def _argv(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(shown(a)) for a in argv)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def _where(d: Destination) -> str:
    where = f"{shown(d.host)}:{d.port if d.port is not None else '?'}"
    return f"inbound to {where} (published)" if d.direction == "inbound" else where


def _dir(directory: str) -> str:
    return directory if directory.endswith("/") else directory + "/"


def _exit(value: int | None) -> str:
    return "?" if value is None else str(value)


def _waited(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}s"


# -- text ----------------------------------------------------------------------------------------------------
def verification_line(report: SessionReport) -> str:
    v = report.verification
    word = {"valid": "VERIFIED", "tampered": "TAMPERED", "unsealed": "NOT FULLY SEALED"}.get(v.status,
                                                                                             "NOT VERIFIED")
    return f"{word}: {shown(v.detail)}"


def render_text(report: SessionReport) -> str:
    lines: list[str] = ["guard session report", "", "trail: " + verification_line(report)]
    for s in report.sessions:
        end = f"ended {s.ended[:19]}Z, exit {_exit(s.exit_status)}" if s.ended else "still running or cut off"
        lines.append(f"session {shown(s.id)}: policy {shown(s.policy)}, workspace {shown(s.workspace)}, "
                     f"started {s.started[:19]}Z, {end}")
        lines.append(f"  command: {_argv(s.argv)}")

    def section(title: str, rows: Iterable[str], empty: str) -> None:
        rows = list(rows)
        lines.extend(["", f"{title} ({len(rows)})" if rows else title])
        lines.extend(rows or [f"  {empty}"])

    section("OUTSIDE THE WORKSPACE", (f"  {o.verdict:5} {o.op:5} {shown(o.path)}  rule {shown(o.rule)}"
                                      + (f"  x{o.count}" if o.count > 1 else "") for o in report.outside),
            "nothing recorded outside the workspace")
    lines += ["", "SUMMARY"]
    lines += [f"  {label}: {getattr(report.summary, key)}" for key, label in SUMMARY_FIELDS]
    file_rows = []
    for g in report.files:
        where = "" if g.inside_workspace else "  [outside the workspace]"
        file_rows.append(f"  {shown(_dir(g.directory))}  {len(g.files)} file(s), {g.count} write(s){where}")
        file_rows += [f"    {e.change:8} {shown(e.path.rsplit('/', 1)[-1])}" + (f"  x{e.count}" if e.count > 1
                                                                                  else "") for e in g.files]
    section("FILES WRITTEN, BY DIRECTORY", file_rows, "no file written")
    section("COMMANDS", (f"  x{c.count:<4} exit {_exit(c.exit_status):>3}"
                         + (f"  denied {c.denied}" if c.denied else "") + f"  {_argv(c.argv)}"
                         for c in report.commands), "no command recorded")
    section("NETWORK", (f"  {_where(d)}  attempts {d.attempts}, "
                        f"allowed {d.allowed}, refused {d.refused}, {_size(d.bytes_up)} up, "
                        f"{_size(d.bytes_down)} down, rules {', '.join(shown(r) for r in d.rules)}"
                        for d in report.network), "no network destination")
    section("DENIALS", (f"  {d.ts[11:23]} {d.op:7} {shown(d.target)}  rule {shown(d.rule)}"
                        + ("  (audit mode: let through)" if d.audit_only else "") + f": {shown(d.reason)}"
                        for d in report.denials), "nothing denied")
    section("ASKS", (f"  {a.ts[11:23]} {a.op:7} {shown(a.target)}  rule {shown(a.rule)}: {a.answer}"
                     + (f" by {shown(a.by)}" if a.by else "") + f", waited {_waited(a.waited_s)}"
                     for a in report.asks), "nothing asked")
    section("TOOL CALLS (the agent's stated intent, from hooks)",
            (f"  {t.ts[11:23]} {shown(t.tool)}: {shown(t.detail)}  {t.verdict}" for t in report.tool_calls),
            "no tool calls in the trail (no agent hooks in use)")
    section("TIME LINE", (f"  +{e.offset_s:9.3f}s {e.kind:8} {shown(e.text)}" for e in report.timeline),
            "no events")
    lines += ["", "NOTES"] + [f"  - {n}" for n in report.notes]
    return "\n".join(lines) + "\n"


# -- JSON ----------------------------------------------------------------------------------------------------
def _lossless(obj: Any) -> Any:
    """JSON cannot carry undecodable bytes: they become `\\xNN` (the rest of a string is kept as is)."""
    if isinstance(obj, str):
        return obj.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if isinstance(obj, dict):
        return {k: _lossless(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_lossless(v) for v in obj]
    return obj


def render_json(report: SessionReport) -> bytes:
    return orjson.dumps(_lossless(report.to_dict()), option=orjson.OPT_INDENT_2) + b"\n"


# -- HTML ----------------------------------------------------------------------------------------------------
def _h(value: str) -> str:
    return html.escape(shown(value), quote=True)


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{padding:18px 28px;background:#1d2330;color:#fff}header h1{margin:0 0 4px;font-size:20px}
main{padding:18px 28px;max-width:1200px}
.banner{padding:10px 14px;border-radius:6px;font-weight:600;margin:0 0 16px}
.valid{background:#dff3e4;color:#14532d;border:1px solid #86c79a}
.bad{background:#fde2e1;color:#7f1d1d;border:1px solid #e79a97}
.warn{background:#fff4d6;color:#713f12;border:1px solid #e8c66a}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:0 0 18px;padding:0}
.card{background:#fff;border:1px solid #d9dde5;border-radius:8px;padding:10px 14px;min-width:120px}
.card{list-style:none}
.card b{display:block;font-size:24px}.card.hot b{color:#b91c1c}.card span{color:#5b6474;font-size:12px}
section{background:#fff;border:1px solid #d9dde5;border-radius:8px;padding:12px 16px;margin:0 0 16px}
h2{font-size:16px;margin:0 0 8px}table{border-collapse:collapse;width:100%}
td,th{text-align:left;padding:3px 8px;border-bottom:1px solid #eef0f4;vertical-align:top;font-size:13px}
code,td.m{font-family:ui-monospace,monospace;word-break:break-all}
.deny{color:#b91c1c;font-weight:600}.ask{color:#a16207;font-weight:600}.allow{color:#15803d}
.track{position:relative;height:38px;background:#eef1f6;border-radius:6px;margin:6px 0 10px}
.mark{position:absolute;top:6px;width:4px;height:26px;border-radius:2px;background:#64748b}
.mark.deny{background:#dc2626}.mark.ask{background:#d97706}.mark.connect{background:#2563eb}
.mark.write{background:#16a34a}.mark.command{background:#7c3aed}.mark.session{background:#0f172a}
.legend span{margin-right:12px;font-size:12px}.empty{color:#5b6474}
.key{color:#64748b}.key.deny{color:#dc2626}.key.ask{color:#d97706}.key.connect{color:#2563eb}
.key.write{color:#16a34a}.key.command{color:#7c3aed}.key.session{color:#0f172a}
.callout{border-left:4px solid #b91c1c}
footer{padding:0 28px 24px;color:#5b6474;font-size:12px}
"""


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], empty: str, ident: str) -> str:
    rows = list(rows)
    if not rows:
        return f'<p class="empty" id="{ident}-empty">{html.escape(empty)}</p>'
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(cell for cell in row) + "</tr>" for row in rows)
    return f'<table id="{ident}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _td(value: str, cls: str = "") -> str:
    return f'<td class="{cls}">{value}</td>' if cls else f"<td>{value}</td>"


def _verdict_td(verdict: str) -> str:
    cls = verdict if verdict in ("allow", "deny", "ask") else ""
    return _td(html.escape(verdict), cls)


def _cards(summary: Summary) -> str:
    hot = {"denied", "outside_workspace", "refused_connections", "asked"}
    items = []
    for key, label in SUMMARY_FIELDS:
        value = getattr(summary, key)
        cls = "card hot" if key in hot and value else "card"
        items.append(f'<li class="{cls}"><b id="n-{key}">{value}</b><span>{html.escape(label)}</span></li>')
    return '<ul class="cards" id="summary">' + "".join(items) + "</ul>"


def _track(report: SessionReport) -> str:
    """The time line at a glance: one mark per event along the session's duration, coloured by kind."""
    events = report.timeline
    if not events:
        return '<p class="empty">no events</p>'
    span = max(e.offset_s for e in events) or 1.0
    marks = []
    for e in events:
        left = 100.0 * e.offset_s / span
        cls = "deny" if e.verdict == "deny" else ("ask" if e.kind == "ask" else e.kind)
        marks.append(f'<div class="mark {html.escape(cls)}" style="left:calc({left:.3f}% - 2px)" '
                     f'title="+{e.offset_s:.3f}s {_h(e.text)}"></div>')
    legend = "".join(f'<span><span class="key {k}">&#9632;</span> {k}</span>'
                     for k in ("session", "command", "write", "connect", "deny", "ask"))
    return (f'<div class="track" id="track">{"".join(marks)}</div><div class="legend">{legend} '
            f"(0 to {span:.3f} s)</div>")


def _timeline_table(report: SessionReport) -> str:
    rows = ((_td(f"+{e.offset_s:.3f}s"), _td(html.escape(e.kind)), _verdict_td(e.verdict),
             _td(_h(e.text), "m")) for e in report.timeline)
    dropped = (f'<p class="empty">{report.timeline_dropped} later event(s) not shown</p>'
               if report.timeline_dropped else "")
    return _table(("time", "kind", "verdict", "what"), rows, "no events", "timeline") + dropped


def render_html(report: SessionReport) -> str:
    v = report.verification
    banner_cls = {"valid": "valid", "tampered": "bad"}.get(v.status, "warn")
    sessions = "".join(
        f"<li><code>{_h(s.id)}</code>: policy <code>{_h(s.policy)}</code>, workspace <code>{_h(s.workspace)}"
        f"</code>, started {html.escape(s.started)}"
        + (f", ended {html.escape(s.ended)}, exit {_exit(s.exit_status)}" if s.ended else ", not ended")
        + f"<br>command: <code>{html.escape(_argv(s.argv))}</code></li>" for s in report.sessions)
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">",
        "<meta name=viewport content=\"width=device-width, initial-scale=1\">",
        f"<title>guard session report</title><style>{_CSS}</style></head><body>",
        f"<header><h1>guard session report</h1><ul>{sessions}</ul></header><main>",
        f'<p class="banner {banner_cls}" id="verification" data-status="{html.escape(v.status)}">trail: '
        f"{html.escape(verification_line(report))}</p>",
        '<section class="callout"><h2>Outside the workspace</h2>' + _table(
            ("verdict", "op", "path", "rule", "count"),
            ((_verdict_td(o.verdict), _td(html.escape(o.op)), _td(_h(o.path), "m"), _td(_h(o.rule)),
              _td(str(o.count))) for o in report.outside), "nothing recorded outside the workspace",
            "outside")
        + "</section>",
        _cards(report.summary),
        "<section><h2>Time line</h2>" + _track(report) + "</section>",
        "<section><h2>Files written, by directory</h2>" + _table(
            ("directory", "file", "change", "writes"),
            ((_td(_h(_dir(g.directory)) + ("" if g.inside_workspace else " <b>(outside)</b>"), "m"),
              _td(_h(e.path.rsplit("/", 1)[-1]), "m"), _td(html.escape(e.change)), _td(str(e.count)))
             for g in report.files for e in g.files), "no file written", "files") + "</section>",
        "<section><h2>Commands</h2>" + _table(
            ("runs", "denied", "exit", "argv"),
            ((_td(str(c.count)), _td(str(c.denied), "deny" if c.denied else ""), _td(_exit(c.exit_status)),
              _td(html.escape(_argv(c.argv)), "m")) for c in report.commands), "no command recorded",
            "commands")
        + "</section>",
        "<section><h2>Network</h2>" + _table(
            ("destination", "attempts", "allowed", "refused", "sent", "received", "rules"),
            ((_td(html.escape(_where(d)), "m"), _td(str(d.attempts)),
              _td(str(d.allowed)), _td(str(d.refused), "deny" if d.refused else ""), _td(_size(d.bytes_up)),
              _td(_size(d.bytes_down)), _td(_h(", ".join(d.rules)))) for d in report.network),
            "no network destination", "network") + "</section>",
        "<section><h2>Denials</h2>" + _table(
            ("time", "op", "target", "rule", "reason"),
            ((_td(html.escape(d.ts)), _td(html.escape(d.op)), _td(_h(d.target), "m"),
              _td(_h(d.rule) + (" (audit mode: let through)" if d.audit_only else "")), _td(_h(d.reason)))
             for d in report.denials), "nothing denied", "denials") + "</section>",
        "<section><h2>Asks</h2>" + _table(
            ("time", "op", "target", "rule", "answer", "by", "waited"),
            ((_td(html.escape(a.ts)), _td(html.escape(a.op)), _td(_h(a.target), "m"), _td(_h(a.rule)),
              _verdict_td(a.answer), _td(_h(a.by)), _td(_waited(a.waited_s))) for a in report.asks),
            "nothing asked", "asks") + "</section>",
        "<section><h2>Tool calls (the agent's stated intent)</h2>" + _table(
            ("time", "tool", "input", "verdict"),
            ((_td(html.escape(t.ts)), _td(_h(t.tool)), _td(_h(t.detail), "m"), _verdict_td(t.verdict))
             for t in report.tool_calls), "no tool calls in the trail (no agent hooks in use)", "tools")
        + "</section>",
        "<section><h2>Every event</h2>" + _timeline_table(report) + "</section>",
        "</main><footer><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in report.notes)
        + "</ul></footer>",
        "</body></html>\n",
    ]
    return "".join(parts)
