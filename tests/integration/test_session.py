"""guard.session.Decider against a real daemon: what happens to an `ask` when the daemon is gone."""

from __future__ import annotations

import threading
from pathlib import Path

from support.daemon import running_daemon, wait_until

from guard.daemon.client import DaemonClient
from guard.model import Action, Op, Verdict
from guard.policy import load_policy
from guard.session import FAIL_CLOSED_RULE, Decider, Tally

POLICY = """\
version: 1
name: session-test
rules:
  - {id: ws, allow: [read, write], paths: ["${workspace}/**"]}
  - {id: publish, ask: [run], commands: ["git push ..."]}
"""


def test_an_ask_without_a_daemon_is_refused_by_name_and_the_sandbox_is_stopped(guard_home: Path,
                                                                                 tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (tmp_path / "p.yaml").write_text(POLICY)
    policy = load_policy(tmp_path / "p.yaml", workspace=workspace)
    killed = threading.Event()
    with running_daemon(guard_home) as daemon:
        client = DaemonClient.connect(guard_home, timeout=5)
        session = client.open_session(tmp_path / "p.yaml", workspace)["session"]
        decider = Decider(policy, client, session, Tally(), warn=lambda _line: None)
        decider.on_record_failure(killed.set)
        assert decider.decide(Action(Op.WRITE, str(workspace / "a"))).verdict is Verdict.ALLOW
        daemon.kill()
        daemon.wait(timeout=10)
        refused = decider.decide(Action(Op.RUN, "git push origin main", argv=("git", "push", "origin", "main")))
        assert (refused.verdict, refused.rule_id) == (Verdict.DENY, FAIL_CLOSED_RULE)
        # its record cannot be delivered either: the recorder gives up and stops the sandbox
        wait_until(killed.is_set, timeout=10, what="the record failure to stop the sandbox")
        after = decider.decide(Action(Op.WRITE, str(workspace / "b")))
        assert (after.verdict, after.rule_id) == (Verdict.DENY, FAIL_CLOSED_RULE)
        decider.close()
        client.close()
