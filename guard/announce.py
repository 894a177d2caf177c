"""Asks reach the human at once: `guard run` announces every request of its session that waits for a person.

A person waiting on an ask they cannot see is a bug (the agent freezes, the preference is silently lost), so
the moment the daemon holds a request of this session, the engineer is told what waits (escaped: the agent
controls every string of it), which rule asked, how long is left and how to answer, on every channel that
does not break the agent's terminal:

- one line on guard run's stderr (in a terminal, on a line of its own, so a TUI redraws over it);
- the terminal's title and bell (an escape sequence a TUI does not draw over);
- tmux's status line when guard run itself runs inside tmux (`tmux display-message`);
- a desktop notification when a session bus or display is there and `notify-send` is installed.

The answer itself is given elsewhere (`guard approve ID`, `guard approvals --watch`), since the agent owns
the terminal's input. How it ended is announced too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from guard.errors import GuardError
from guard.text import shown


def describe(approval: Mapping[str, Any]) -> str:
    """The pending request as one escaped line: what, which rule, why."""
    action = approval.get("action") or {}
    what = f"{action.get('op', '?')} {action.get('target', '?')}"
    return (f"{shown(what)} (rule {shown(str(approval.get('rule_id') or 'default'))}: "
            f"{shown(str(approval.get('reason') or ''))})")


def announcement(approval: Mapping[str, Any]) -> str:
    ident = shown(str(approval.get("approval", "?")))
    left = approval.get("expires_in_s")
    wait = f"; refused in {left:.0f} s without an answer" if isinstance(left, int | float) else ""
    return (f"guard: WAITING FOR YOU: {describe(approval)}. Answer in another terminal: "
            f"guard approve {ident}  |  guard deny {ident}  |  guard approvals --watch{wait}")


class AskAnnouncer:
    """Watches the daemon's approvals for one session and announces them (a thread; stop() ends it)."""

    def __init__(self, home: Path, session: str, env: Mapping[str, str], say: Callable[[str], None],
                 *, tty: bool | None = None) -> None:
        self._home = home
        self._session = session
        self._env = dict(env)
        self._say = say
        self._tty = os.isatty(2) if tty is None else tty
        self._stop = threading.Event()
        self.announced: list[str] = []  # approval ids, for the session summary and tests
        self._children: list[subprocess.Popen[bytes]] = []
        self.thread = threading.Thread(target=self._run, name="guard-ask-announcer", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Never delays guard run's exit: the thread is a daemon thread and notices within half a second;
        finished notifiers are reaped, running ones are left to finish on their own."""
        self._stop.set()
        for child in self._children:
            child.poll()

    def _run(self) -> None:
        from guard.daemon.client import watch_approvals

        try:
            for change in watch_approvals(self._home, stop=self._stop):
                if change["event"] == "snapshot":
                    for approval in change.get("approvals", []):
                        self._pending(approval)
                elif change["event"] == "pending":
                    self._pending(change.get("approval") or {})
                elif change["event"] == "resolved":
                    self._resolved(change.get("approval") or {}, change)
        except GuardError as exc:
            self._say(f"guard: warning: asks of this session are not announced here ({exc.message}); "
                      "see `guard approvals`")
        except (OSError, ValueError):
            return  # the daemon went away: the session's own fail-closed path says so

    def _pending(self, approval: Mapping[str, Any]) -> None:
        if approval.get("session") != self._session:
            return
        line = announcement(approval)
        self.announced.append(str(approval.get("approval")))
        if self._tty:  # a line of its own, then the title and the bell: nothing a TUI cannot redraw
            ident = shown(str(approval.get("approval", "")))
            self._say(f"\r\x1b[K{line}\r")
            with contextlib.suppress(OSError):
                os.write(2, f"\x1b]2;guard: approval {ident} waiting\x07\x07".encode())
        else:
            self._say(line)
        self._side_channels(line)

    def _resolved(self, approval: Mapping[str, Any], message: Mapping[str, Any]) -> None:
        if approval.get("session") != self._session:
            return
        verdict, by = shown(str(message.get("verdict", "?"))), shown(str(message.get("by", "?")))
        line = f"guard: {shown(str(approval.get('approval', '?')))} {verdict} (by {by}): {describe(approval)}"
        self._say(f"\r\x1b[K{line}\r" if self._tty else line)
        if self._tty:
            with contextlib.suppress(OSError):
                os.write(2, b"\x1b]2;\x07")

    def _side_channels(self, line: str) -> None:
        """tmux's status line and a desktop notification, fire-and-forget: never block the announcer."""
        commands = []
        if self._env.get("TMUX") and shutil.which("tmux"):
            commands.append(["tmux", "display-message", "-d", "15000", line[:300]])
        graphical = any(self._env.get(k) for k in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS"))
        if graphical and shutil.which("notify-send"):
            commands.append(["notify-send", "-u", "critical", "-a", "guard", "guard: approval needed", line])
        for argv in commands:
            with contextlib.suppress(OSError):
                self._children.append(subprocess.Popen(
                    argv, env=self._env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, start_new_session=True))
