"""The pure learner: from recorded needs to the smallest extending policy, checked by loading what it writes."""

from __future__ import annotations

from pathlib import Path

from guard.audit.events import decision_event, session_event
from guard.model import Action, Decision, Op, Verdict
from guard.net.grants import policy_cidr_grant
from guard.net.records import ConnectionRecord
from guard.policy import Policy, load_policy
from guard.policy.learn import Learned, Observation, learn, observations, render
from guard.policy.testing import run_tests

HOME = "/home/u"
WS = "/projects/ws"


def base_for(ref: str = "coding-agent") -> dict[str, Policy]:
    return {WS: load_policy(ref, workspace=Path(WS), home=Path(HOME), env={})}


def denied(op: Op, target: str, verdict: Verdict = Verdict.DENY, rule: str | None = None,
           audit_only: bool = False, **ctx: object) -> dict:
    return decision_event("s1", Action(op, target, **ctx), Decision(verdict, rule, "why", audit_only))


def trail(*records: dict) -> list[dict]:
    return [session_event("s1", "start", workspace=WS, policy="coding-agent"), *records]


def learned_from(records: list[dict], base: str = "coding-agent") -> Learned:
    policies = base_for(base)
    return learn(observations(records), policies.__getitem__, base=base, home=HOME, sessions=["s1"])


def load_learned(tmp: Path, text: str) -> Policy:
    path = tmp / "learned.yaml"
    path.write_text(text)
    return load_policy(path, workspace=Path(WS), home=Path(HOME), env={})


def test_paths_are_generalised_where_a_directory_s_entries_vary(tmp_path: Path) -> None:
    result = learned_from(trail(
        denied(Op.WRITE, f"{HOME}/notes/a.txt"), denied(Op.WRITE, f"{HOME}/notes/b.txt"),
        denied(Op.WRITE, f"{HOME}/notes/b.txt"),  # once is enough
        denied(Op.WRITE, "/srv/data/only.db", audit_only=True),  # audit-mode denials are needs too
        denied(Op.EXEC, f"{HOME}/tools/bin/fmt"),
    ))
    rules = {r.id: r for r in result.rules}
    assert set(rules["learned-write"].paths) == {"/srv/data/only.db", "~/notes/*"}
    assert rules["learned-read-exec"].paths == ("~/tools/bin/fmt",)
    policy = load_learned(tmp_path, render(result, name="learned", extends="coding-agent"))
    assert policy.decide(Action(Op.WRITE, f"{HOME}/notes/c.txt")).verdict is Verdict.ALLOW
    assert policy.decide(Action(Op.WRITE, f"{HOME}/notes/deeper/c.txt")).verdict is Verdict.DENY
    assert policy.decide(Action(Op.WRITE, "/srv/data/other.db")).verdict is Verdict.DENY
    assert policy.decide(Action(Op.EXEC, f"{HOME}/tools/bin/fmt")).verdict is Verdict.ALLOW
    assert policy.decide(Action(Op.READ, f"{HOME}/.ssh/id_rsa")).verdict is Verdict.DENY
    report = run_tests(policy, tuple(r.id for r in result.rules))
    assert report.results and not report.failures and not report.uncovered


def test_what_the_base_decides_by_rule_is_never_granted(tmp_path: Path) -> None:
    result = learned_from(trail(
        denied(Op.WRITE, f"{HOME}/.bashrc", rule="shell-rc"),
        denied(Op.READ, f"{HOME}/.ssh/id_rsa", rule="credentials"),
        denied(Op.WRITE, f"{WS}/.vscode/settings.json", Verdict.ASK, "workspace-settings"),
        denied(Op.RUN, "sudo id", rule="escalation", argv=("sudo", "id")),
        denied(Op.CONNECT, "db.internal:5432", addresses=("10.0.0.5",)),
        denied(Op.WRITE, HOME),  # `mkdir -p ~/x` records its existing parent: too broad to grant
        denied(Op.WRITE, f"{HOME}/notes/a.txt"),
    ))
    refused = {(r.target, r.rule_id) for r in result.refused}
    assert refused == {("~/.bashrc", "shell-rc"), ("~/.ssh/id_rsa", "credentials"),
                       ("${workspace}/.vscode/settings.json", "workspace-settings"), ("sudo id", "escalation"),
                       ("db.internal:5432", "private-networks"), ("~", "learn:too-broad")}
    text = render(result, name="learned", extends="coding-agent")
    assert "#   write ~/.bashrc: deny by rule shell-rc" in text
    policy = load_learned(tmp_path, text)
    tests = dict(result.tests)
    assert tests["write ~/.bashrc"] == "deny" and tests["write ${workspace}/.vscode/settings.json"] == "ask"
    report = run_tests(policy, ())
    assert len(report.results) == 7 and not report.failures
    for action in (Action(Op.WRITE, f"{HOME}/.bashrc"), Action(Op.READ, f"{HOME}/.ssh/id_rsa"),
                   Action(Op.WRITE, HOME), Action(Op.CONNECT, "db.internal:5432", addresses=("10.0.0.5",))):
        assert policy.decide(action).verdict is not Verdict.ALLOW, action


def test_network_needs_become_hosts_ports_and_the_cidr_the_proxy_needs(tmp_path: Path) -> None:
    refused_by_proxy = {**ConnectionRecord("connect", "127.0.0.1:4000", "deny", "guard:special-address", "no",
                                           host="api.internal.test", port=8443,
                                           addresses=("127.0.0.1",)).to_dict(), "session": "s1"}
    result = learned_from(trail(
        denied(Op.CONNECT, "pypi.example:443", addresses=("151.101.0.223",)),
        denied(Op.CONNECT, "pypi.example:8443", addresses=("151.101.0.223",)),
        refused_by_proxy,
    ))
    rules = {r.hosts[0]: r for r in result.rules}
    assert rules["pypi.example"].ports == (443, 8443) and rules["pypi.example"].cidrs == ()
    assert rules["api.internal.test"].cidrs == ("127.0.0.1/32",) and rules["api.internal.test"].ports == (8443,)
    policy = load_learned(tmp_path, render(result, name="learned", extends="coding-agent"))
    assert policy.decide(Action(Op.CONNECT, "pypi.example:443")).verdict is Verdict.ALLOW
    assert policy.decide(Action(Op.CONNECT, "pypi.example:22")).verdict is Verdict.DENY
    # what the proxy will let through at the host's loopback: that name, at that address and port only (a
    # rule's matchers are conditions, all of them hold)
    grant = policy_cidr_grant(policy)
    assert grant("127.0.0.1", 8443, "api.internal.test")
    assert not grant("127.0.0.1", 8444, "api.internal.test") and not grant("127.0.0.2", 8443, "api.internal.test")
    assert not grant("127.0.0.1", 8443, "other.test")
    assert not policy_cidr_grant(load_policy("coding-agent", workspace=Path(WS), home=Path(HOME), env={}))(
        "127.0.0.1", 8443)


def test_commands_are_learned_exactly_when_the_base_refuses_them_by_default(tmp_path: Path) -> None:
    base = tmp_path / "strict.yaml"
    base.write_text("version: 1\nname: strict\nextends: [base]\ndefaults: {file: deny, network: deny, "
                    "process: deny}\nrules:\n  - id: no-sudo\n    deny: [run]\n    commands: [\"sudo ...\"]\n")
    policies = {WS: load_policy(base, workspace=Path(WS), home=Path(HOME), env={})}
    found = observations(trail(denied(Op.RUN, "make test", argv=("make", "test")),
                               denied(Op.RUN, "ls *.py", argv=("ls", "*.py")),
                               denied(Op.RUN, "sudo make install", rule="no-sudo",
                                      argv=("sudo", "make", "install"))))
    result = learn(found, policies.__getitem__, base=str(base), home=HOME, sessions=["s1"])
    (rule,) = result.rules
    assert rule.commands == ("make test", "ls '[*].py'")
    policy = load_learned(tmp_path, render(result, name="learned", extends=str(base)))
    assert policy.decide(Action(Op.RUN, "make test", argv=("make", "test"))).verdict is Verdict.ALLOW
    assert policy.decide(Action(Op.RUN, "make deploy", argv=("make", "deploy"))).verdict is Verdict.DENY
    assert policy.decide(Action(Op.RUN, "ls *.py", argv=("ls", "*.py"))).verdict is Verdict.ALLOW
    assert policy.decide(Action(Op.RUN, "ls a.py", argv=("ls", "a.py"))).verdict is Verdict.DENY
    assert [r.rule_id for r in result.refused] == ["no-sudo"]


def test_glob_characters_in_a_path_are_literal_in_the_learned_rule(tmp_path: Path) -> None:
    result = learned_from(trail(denied(Op.WRITE, f"{HOME}/odd/[x]*.txt")))
    assert result.rules[0].paths == ("~/odd/\\[x]\\*.txt",)
    policy = load_learned(tmp_path, render(result, name="learned", extends="coding-agent"))
    assert policy.decide(Action(Op.WRITE, f"{HOME}/odd/[x]*.txt")).verdict is Verdict.ALLOW
    assert policy.decide(Action(Op.WRITE, f"{HOME}/odd/x-anything.txt")).verdict is Verdict.DENY
    assert not run_tests(policy, ()).failures


def test_allowed_and_unknown_records_teach_nothing() -> None:
    found = observations(trail(
        decision_event("s1", Action(Op.WRITE, f"{WS}/a"), Decision(Verdict.ALLOW, "workspace", "ok")),
        {"type": "decision", "session": "s1", "action": {"op": "teleport", "target": "x"},
         "decision": {"verdict": "deny"}},
        {"type": "connection", "session": "s1", "verdict": "deny", "host": "x.example"},  # no port: no need
        {**ConnectionRecord("connect", "127.0.0.1:1", "deny", "guard:bad-request", "garbled", host="y.example",
                            port=443).to_dict(), "session": "s1"},  # the proxy's own refusal, not the policy's
        {**ConnectionRecord("publish", "127.0.0.1:2", "deny", "guard:publish", "limit", host="127.0.0.1",
                            port=3000).to_dict(), "session": "s1"},
    ))
    assert found == []
    assert observations([denied(Op.WRITE, "/x/y")]) == [Observation(Op.WRITE, "/x/y", "s1", "")]


def test_the_refusal_decision_the_session_records_for_the_proxy_teaches_what_its_connection_did(
        tmp_path: Path) -> None:
    """Since the session records the proxy's own refusal as a deny decision too, the learner sees it twice:
    the special-address refusal is one need (the CIDR grant), and guard's other refusals (a forwarded port
    nothing answers on, no decision, a recording failure) teach nothing, as their connection records never
    did."""
    refusal = denied(Op.CONNECT, "api.internal.test:8443", rule="guard:special-address",
                     addresses=("127.0.0.1",))
    record = {**ConnectionRecord("connect", "127.0.0.1:4000", "deny", "guard:special-address", "no",
                                 host="api.internal.test", port=8443, addresses=("127.0.0.1",)).to_dict(),
              "session": "s1"}
    found = observations(trail(refusal, record,
                               denied(Op.CONNECT, "127.0.0.1:5000", rule="guard:forward", addresses=("127.0.0.1",)),
                               denied(Op.CONNECT, "x.test:443", rule="guard:no-decision"),
                               denied(Op.WRITE, "/projects/ws/a", rule="guard:fail-closed")))
    assert [(o.target, o.proxy_refused_address) for o in found] == [("api.internal.test:8443", True)]
    result = learned_from(trail(refusal, record))
    [rule] = result.rules
    assert rule.hosts == ("api.internal.test",) and rule.cidrs == ("127.0.0.1/32",)
