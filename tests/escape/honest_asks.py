"""Asks reach the human: guard run announces a waiting request at once (escaped), `guard approve ID` answers
it, and `--remember` turns the answer into a reviewable rule. Honest work that waits for a person must never
wait silently (the agent freezes, the person sees nothing)."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import threading
from typing import Any

import yaml

ASK_POLICY = "version: 1\nname: slow-ask\nextends: [coding-agent]\nsettings: {ask_timeout: 60}\n"


def _start(world: Any, script: str, policy: Any = None) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    if policy is None:
        policy = world.root / "policies" / "slow-ask.yaml"
        policy.write_text(ASK_POLICY)
    proc = subprocess.Popen(world.guard_run_argv(world.sh(script), policy=policy), env=world.env, cwd=world.ws,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    world.track(proc.pid)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
    return proc, lines


def _session(lines: queue.Queue[str], timeout: float = 30) -> str:
    """The session id from guard run's --json-summary line, read from the rest of its stderr."""
    while True:
        line = lines.get(timeout=timeout)
        if line.startswith("{") and '"session"' in line:
            return str(json.loads(line)["session"])


def _announcement(lines: queue.Queue[str], timeout: float = 30) -> str:
    seen = []
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no announcement of the waiting ask within {timeout} s; stderr: {seen}") from None
        seen.append(line)
        if "WAITING FOR YOU" in line:
            return line


def test_an_ask_is_announced_at_once_answered_and_remembered(world):
    settings = world.home / ".claude" / "settings.json"
    settings.parent.mkdir(exist_ok=True)
    proc, lines = _start(world, f"echo '{{\"theme\": \"dark\"}}' > {settings} && echo SAVED")
    line = _announcement(lines)
    assert str(settings) in line and "agent-settings" in line, line
    ident = re.search(r"guard approve (\S+)", line)
    assert ident, line
    answered = world.guard("approve", ident.group(1), "--remember")
    assert "approved" in answered.stdout and "remembered as rule remembered-1" in answered.stdout, answered.stdout
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "SAVED" in out, (proc.returncode, out)
    assert '"theme": "dark"' in settings.read_text()

    remembered = world.gh / "remembered.yaml"
    doc = yaml.safe_load(remembered.read_text())
    assert doc["rules"][0]["allow"] == ["write"] and doc["rules"][0]["paths"] == [str(settings)], doc
    assert (remembered.stat().st_mode & 0o777) == 0o600
    lint = world.guard("policy", "lint", str(remembered), check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    tested = world.guard("policy", "test", str(remembered), check=False)
    assert tested.returncode == 0 and "1 passed" in tested.stdout, tested.stdout + tested.stderr


def test_an_announcement_shows_the_agents_strings_escaped(world):
    """The target is the agent's choice: an escape sequence in it must not reach the terminal raw (it could
    erase the line or fake another request)."""
    (world.ws / ".vscode").mkdir(exist_ok=True)
    evil = ".vscode/\x1b[2K\rguard: harmless.json"
    proc, lines = _start(world, f"printf x > '{evil}'")
    line = _announcement(lines)
    assert "\x1b" not in line and "\\x1b[2K\\rguard: harmless.json" in line, repr(line)
    ident = re.search(r"guard approve (\S+)", line)
    assert ident, line
    world.guard("deny", ident.group(1))
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert not (world.ws / evil).exists()


def test_an_ask_is_held_as_the_session_decided_it_never_re_decided(world):
    """One decision, made once: a deny that protects only what existed at launch (`applies_to: existing`)
    and an ask on the same tree. A file the agent creates during the session is an ask in the session; the
    daemon, which does not know what existed at launch, must hold that ask for a human rather than decide
    again (it used to answer deny, and the human was never asked)."""
    conf = world.ws / "conf"
    conf.mkdir(exist_ok=True)
    (conf / "old.cfg").write_text("engineer's\n")
    policy = world.root / "policies" / "existing.yaml"
    policy.write_text(
        "version: 1\nname: existing\nextends: [coding-agent]\nsettings: {ask_timeout: 60}\nrules:\n"
        "  - id: protect-existing-conf\n    deny: [write]\n    paths: [\"${workspace}/conf/*.cfg\"]\n"
        "    applies_to: existing\n"
        "  - id: ask-conf\n    ask: [write]\n    paths: [\"${workspace}/conf/**\"]\n")
    lint = world.guard("policy", "lint", str(policy), check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    proc, lines = _start(world, "echo new > conf/new.cfg && echo CREATED", policy=policy)
    line = _announcement(lines)
    assert "conf/new.cfg" in line and "ask-conf" in line, line
    ident = re.search(r"guard deny (\S+)", line)
    assert ident, line
    world.guard("deny", ident.group(1), "--by", "the-engineer")
    proc.wait(timeout=60)
    out = proc.stdout.read()  # type: ignore[union-attr]
    assert proc.returncode != 0 and "CREATED" not in out, (proc.returncode, out)
    session = _session(lines)
    records = world.records(session)
    asked = [r for r in records if r.get("type") == "decision" and r["decision"]["verdict"] == "ask"]
    assert [r["decision"]["rule_id"] for r in asked] == ["ask-conf"], records
    answers = [r for r in records if r.get("type") == "approval"]
    assert [(a["verdict"], a["by"]) for a in answers] == [("deny", "the-engineer")], answers
    end = next(r for r in records if r.get("type") == "session" and r.get("event") == "end")
    assert end["summary"]["asked"] == 1 and end["summary"]["denied"] == 1, end  # the summary agrees
