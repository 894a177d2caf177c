from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from guard.model import Action, Kind, Op, Verdict
from guard.policy import load_policy

from .helpers import HOME, WS, act, file, load

ORDERED = """
version: 1
defaults: {file: deny, network: deny, process: allow}
rules:
  - id: home
    allow: [read, write]
    paths: [/home/u/**]
  - id: docs
    ask: [write]
    paths: [/home/u/docs/**]
  - id: secrets
    deny: [read, write]
    paths: [/home/u/.ssh/**, "**/.env", "**/.env.*"]
    except: ["**/.env.example"]
    reason: no secrets
  - id: registry
    allow: [connect]
    hosts: [pypi.org, "*.github.com"]
    ports: [443, 8000-8999]
  - id: anyhost-deny-25
    deny: [connect]
    hosts: ["*"]
    ports: [25]
  - id: private
    deny: [connect]
    cidrs: [10.0.0.0/8, "fd00::/8"]
  - id: lan-allow
    allow: [connect]
    cidrs: [192.168.0.0/16]
  - id: publish
    ask: [run]
    commands: ["git push ..."]
  - id: force
    deny: [run]
    commands: ["git push ... --force* ...", "git push ... -f ..."]
  - id: sudo
    deny: [run]
    commands: ["sudo ..."]
"""


def test_combination_deny_ask_allow_and_defaults(tmp_path: Path) -> None:
    p = load(tmp_path, ORDERED)
    cases = {
        "read /home/u/notes.txt": ("allow", "home"),
        "write /home/u/docs/a.md": ("ask", "docs"),
        "read /home/u/docs/a.md": ("allow", "home"),
        "read /home/u/.ssh/id_rsa": ("deny", "secrets"),
        "read /srv/app/.env": ("deny", "secrets"),
        "read /home/u/app/.env.local": ("deny", "secrets"),
        "read /home/u/app/.env.example": ("allow", "home"),  # except removes the deny's match
        "read /srv/app/.env.example": ("deny", None),  # ... and then the default decides
        "read /etc/passwd": ("deny", None),
        "connect pypi.org:443": ("allow", "registry"),
        "connect PyPI.org.:8080": ("allow", "registry"),
        "connect pypi.org:80": ("deny", None),
        "connect api.github.com:443": ("allow", "registry"),
        "connect github.com:443": ("deny", None),  # *.github.com is not the apex
        "connect pypi.org:25": ("deny", "anyhost-deny-25"),
        "connect 10.1.2.3:443": ("deny", "private"),
        "connect [fd00::1]:443": ("deny", "private"),
        "connect [::ffff:10.0.0.1]:443": ("deny", "private"),
        "connect 192.168.1.5:22": ("allow", "lan-allow"),
        "run git status": ("allow", None),
        "run git push origin main": ("ask", "publish"),
        "run git push --force origin": ("deny", "force"),
        "run sudo -i": ("deny", "sudo"),
    }
    for text, (verdict, rule) in cases.items():
        d = p.decide(act(text))
        assert (d.verdict.value, d.rule_id) == (verdict, rule), text


def test_unknown_facts_count_against_the_action(tmp_path: Path) -> None:
    p = load(tmp_path, ORDERED)
    # no port: an allow rule with ports does not match, a deny rule with ports does
    assert p.decide(act("connect pypi.org")).verdict is Verdict.DENY
    assert p.decide(act("connect pypi.org")).rule_id == "anyhost-deny-25"
    # resolved addresses: any address in a denied range denies; an allow needs all addresses inside
    assert p.decide(Action(Op.CONNECT, "pypi.org:443", addresses=("151.101.0.223", "10.0.0.1"))).rule_id == "private"
    assert p.decide(Action(Op.CONNECT, "lan:443", addresses=("192.168.1.1",))).rule_id == "lan-allow"
    assert p.decide(Action(Op.CONNECT, "lan:443", addresses=("192.168.1.1", "8.8.8.8"))).verdict is Verdict.DENY
    bad = p.decide(Action(Op.CONNECT, "lan:443", addresses=("not-an-ip",)))
    assert (bad.verdict, bad.rule_id) == (Verdict.DENY, None) and "malformed resolved address" in bad.reason
    assert "malformed network target" in p.decide(act("connect pypi.org:99999")).reason


def test_compound_lines_take_the_strictest_part(tmp_path: Path) -> None:
    p = load(tmp_path, ORDERED)
    d = p.decide(act("run make && git push origin main"))
    assert (d.verdict, d.rule_id) == (Verdict.ASK, "publish")
    assert d.reason.startswith("part 2 of 2 (git push origin main)")
    assert p.decide(act("run echo $(sudo cat /etc/shadow)")).rule_id == "sudo"
    assert p.decide(act("run FOO=1 nohup timeout 5 git push -f")).rule_id == "force"
    assert p.decide(act("run bash -c 'sudo id'")).rule_id == "sudo"
    assert p.decide(act("run X=1")).verdict is Verdict.ALLOW


def test_unparseable_lines_use_the_strictest_matching_rule_and_say_so(tmp_path: Path) -> None:
    p = load(tmp_path, ORDERED)
    d = p.decide(act("run cat <<EOF | sudo tee /etc/x"))
    assert (d.verdict, d.rule_id) == (Verdict.DENY, "sudo")
    d = p.decide(act("run echo 'x' ; git push -f \"oops"))
    assert (d.verdict, d.rule_id) == (Verdict.DENY, "force")
    assert "could not parse the command line safely (not parsed: unterminated double quote)" in d.reason
    d = p.decide(act("run make && echo \"open"))
    assert d.verdict is Verdict.ALLOW and "could not parse" in d.reason and "no rule matched" in d.reason


def test_a_program_chosen_at_run_time_is_judged_by_the_rules_naming_its_arguments(tmp_path: Path) -> None:
    p = load(tmp_path, ORDERED)
    assert p.decide(act("run $GIT push origin")).rule_id == "publish"
    assert p.decide(act("run \"$GIT\" push -f")).rule_id == "force"
    assert p.decide(act("run $PYTHON -m pytest")).verdict is Verdict.ALLOW  # `sudo ...` names no argument
    assert p.decide(act("run git push $FLAGS")).rule_id == "force"  # $FLAGS may be --force
    assert p.decide(act("run git push \"$REMOTE\"")).rule_id == "force"  # one word: it may be --force
    assert p.decide(act("run git push origin main")).rule_id == "publish"


def test_file_targets_are_normalized(tmp_path: Path) -> None:
    p = load(tmp_path, ORDERED)
    assert p.decide(file("read", "/home/u/x/../.ssh/id_rsa")).rule_id == "secrets"
    assert p.decide(file("read", "~/.ssh/id_rsa")).rule_id == "secrets"
    assert p.decide(Action(Op.READ, ".ssh/id_rsa", cwd="/home/u")).rule_id == "secrets"
    d = p.decide(file("read", "relative.txt"))
    assert (d.verdict, d.rule_id) == (Verdict.DENY, None) and "without a working directory" in d.reason


def test_explain_names_the_winner_and_why_each_other_match_lost(tmp_path: Path) -> None:
    p = load(tmp_path, ORDERED)
    e = p.explain(act("write /home/u/docs/.env"))
    assert e.winner == "secrets" and e.decision.verdict is Verdict.DENY
    assert [(loser.rule_id, loser.why) for loser in e.losers] == [
        ("docs", "ask loses to deny (deny > ask > allow)"),
        ("home", "allow loses to deny (deny > ask > allow)"),
    ]
    e = p.explain(act("read /home/u/a/.env.example"))
    assert e.winner == "home"
    assert [(loser.rule_id, loser.why) for loser in e.losers] == [
        ("secrets", "excluded by its except pattern '/**/.env.example'")]
    e = p.explain(act("run make; git push -f"))
    assert e.winner == "force" and len(e.parts) == 2 and e.parts[1].losers[0].rule_id == "publish"
    assert e.to_dict()["parts"][1]["winner"] == "force"
    assert p.explain(act("read /etc/passwd")).winner is None


def test_ties_go_to_the_more_specific_pattern_then_the_smaller_id(tmp_path: Path) -> None:
    p = load(tmp_path, """
        version: 1
        rules:
          - {id: z-broad, deny: [read], paths: [/a/**]}
          - {id: y-narrow, deny: [read], paths: [/a/b/**]}
          - {id: b-same, deny: [read], paths: [/c/**]}
          - {id: a-same, deny: [read], paths: [/c/**]}
    """)
    e = p.explain(act("read /a/b/c"))
    assert e.winner == "y-narrow"
    assert e.losers[0].why == "same verdict; 'y-narrow' matches more specifically"
    e = p.explain(act("read /c/x"))
    assert e.winner == "a-same"
    assert e.losers[0].why == "same verdict and specificity; 'a-same' comes first by id"


def test_audit_mode_rules_report_but_never_change_enforcement(tmp_path: Path) -> None:
    p = load(tmp_path, """
        version: 1
        defaults: {file: deny}
        rules:
          - {id: ws, allow: [read, write], paths: [/w/**]}
          - {id: watch, deny: [write], paths: [/w/secret/**], mode: audit}
          - {id: strict, ask: [write], paths: [/w/ask/**]}
          - {id: watch-ask, deny: [write], paths: [/w/ask/**], mode: audit}
          - {id: audit-allow, allow: [read], paths: [/other/**], mode: audit}
    """)
    d = p.decide(file("write", "/w/secret/x"))
    assert (d.verdict, d.rule_id, d.audit_only, d.enforced) == (Verdict.DENY, "watch", True, Verdict.ALLOW)
    assert d.reason.startswith("[audit mode, not enforced]")
    d = p.decide(file("write", "/w/ask/x"))  # an enforced ask is never weakened by an audit deny
    assert (d.verdict, d.rule_id, d.audit_only) == (Verdict.ASK, "strict", False)
    d = p.decide(file("read", "/other/x"))  # an audit allow never grants
    assert (d.verdict, d.rule_id) == (Verdict.DENY, None)
    assert p.decide(file("write", "/w/ok")).audit_only is False


def test_whole_policy_audit_mode(tmp_path: Path) -> None:
    p = load(tmp_path, """
        version: 1
        mode: audit
        rules:
          - {id: s, deny: [read], paths: [/s/**]}
    """)
    d = p.decide(file("read", "/s/x"))
    assert (d.verdict, d.rule_id, d.audit_only, d.enforced) == (Verdict.DENY, "s", True, Verdict.ALLOW)
    assert p.decide(file("read", "/elsewhere")).audit_only is True
    assert p.mode == "audit"


def test_defaults_are_deny_unless_set(tmp_path: Path) -> None:
    p = load(tmp_path, "version: 1\ndefaults: {process: ask}\n")
    assert dict(p.defaults) == {Kind.FILE: Verdict.DENY, Kind.NETWORK: Verdict.DENY, Kind.PROCESS: Verdict.ASK}
    assert p.decide(act("run ls")).verdict is Verdict.ASK


def test_decisions_are_cached_and_agree_with_explain(tmp_path: Path) -> None:
    p = load(tmp_path, ORDERED)
    a = act("read /home/u/.ssh/id_rsa")
    first = p.decide(a)
    assert p.decide(Action(Op.READ, "/home/u/.ssh/id_rsa")) is first
    assert p.cache_info().hits == 1
    assert p.explain(a).decision == first


def test_file_rules_for_the_sandbox_planner(tmp_path: Path) -> None:
    p = load(tmp_path, ORDERED)
    rules = {r.rule_id: r for r in p.file_rules()}
    assert set(rules) == {"home", "docs", "secrets"}
    secrets = rules["secrets"]
    assert secrets.patterns == ("/home/u/.ssh/**", "/**/.env", "/**/.env.*")
    assert secrets.excepts == ("/**/.env.example",)
    assert secrets.ops == frozenset({Op.READ, Op.WRITE}) and secrets.verdict is Verdict.DENY
    assert all(pattern.startswith("/") for r in rules.values() for pattern in r.patterns)


def test_host_map_supplies_addresses_for_cidr_rules(tmp_path: Path) -> None:
    p = load(tmp_path, """
        version: 1
        network: {hosts: {db.internal: 10.0.0.7}}
        rules:
          - {id: db, allow: [connect], hosts: [db.internal], ports: [5432]}
          - {id: private, deny: [connect], cidrs: [10.0.0.0/8]}
    """)
    assert dict(p.host_map) == {"db.internal": "10.0.0.7"}
    assert p.decide(act("connect db.internal:5432")).rule_id == "private"


_PATHS = ["/a/**", "/a/b/**", "/a/b/c", "/a/*/c", "**/c", "/x/**", "/a/?/c*"]
_ACTIONS = [file(op, path) for op in ("read", "write") for path in
            ("/a", "/a/b", "/a/b/c", "/a/q/c", "/x/c", "/x/y", "/z", "/a/b/cd")] + [
    act("connect pypi.org:443"), act("connect a.pypi.org:443"), act("connect 10.0.0.1:22"),
    act("run git push -f"), act("run git status && sudo x"), act("run ls")]
_rule = st.fixed_dictionaries({
    "verdict": st.sampled_from(["allow", "ask", "deny"]),
    "ops": st.sampled_from([["read"], ["write"], ["read", "write"]]),
    "paths": st.lists(st.sampled_from(_PATHS), min_size=1, max_size=3, unique=True),
    "except": st.lists(st.sampled_from(_PATHS), max_size=1),
    "audit": st.booleans(),
})
_OTHER_RULES = """
  - {id: n1, allow: [connect], hosts: ["*.pypi.org", pypi.org], ports: [443]}
  - {id: n2, deny: [connect], cidrs: [10.0.0.0/8]}
  - {id: n3, ask: [connect], hosts: ["*"]}
  - {id: c1, ask: [run], commands: ["git push ..."]}
  - {id: c2, deny: [run], commands: ["git push ... -f ...", "sudo ..."]}
  - {id: c3, allow: [run], commands: ["git ...", "ls ..."]}
"""


def _policy_text(rules: list[dict[str, object]], order: list[int]) -> str:
    lines = ["version: 1", "defaults: {file: deny, network: deny, process: ask}", "rules:"]
    for i in order:
        r = rules[i]
        extra = f", except: {r['except']}" if r["except"] else ""
        mode = ", mode: audit" if r["audit"] else ""
        paths = ", ".join(f'"{p}"' for p in r["paths"])  # type: ignore[union-attr]
        lines.append(f"  - {{id: r{i}, {r['verdict']}: {r['ops']}, paths: [{paths}]{extra}{mode}}}")
    return "\n".join(lines) + _OTHER_RULES


@settings(max_examples=150, deadline=None)
@given(st.lists(_rule, min_size=1, max_size=7), st.randoms(use_true_random=False))
def test_rule_order_never_changes_a_decision(rules: list[dict[str, object]], rnd: object) -> None:
    order = list(range(len(rules)))
    shuffled = order[:]
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory() as tmp:
        a_path, b_path = Path(tmp, "a.yaml"), Path(tmp, "b.yaml")
        a_path.write_text(_policy_text(rules, order))
        b_text = _policy_text(rules, shuffled)
        other = _OTHER_RULES.strip("\n").split("\n")
        b_path.write_text(b_text.replace(_OTHER_RULES, "\n" + "\n".join(reversed(other)) + "\n"))
        a = load_policy(a_path, workspace=WS, home=HOME, env={})
        b = load_policy(b_path, workspace=WS, home=HOME, env={})
    for action in _ACTIONS:
        assert a.decide(action) == b.decide(action), str(action)


def test_huge_inputs_are_judged_without_caching_or_quadratic_search(tmp_path: Path) -> None:
    p = load(tmp_path, ORDERED)
    long_line = "git push origin " + "x " * 5000
    assert p.decide(act(f"run {long_line}")).rule_id == "publish"
    assert p.cache_info().currsize == 0
    # a long line that cannot be parsed is searched word by word, not refused wholesale
    d = p.decide(act("run echo 'open " + "word " * 5000))
    assert d.verdict is Verdict.ALLOW and "could not parse" in d.reason
    d = p.decide(act("run echo 'open " + "word " * 5000 + "; git push -f"))
    assert (d.verdict, d.rule_id) == (Verdict.DENY, "force")


_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(st.lists(_label, min_size=1, max_size=3).map(".".join), _label, st.sampled_from(["", ".", "X"]))
def test_engine_never_lets_a_wildcard_reach_the_apex_or_a_lookalike(apex: str, label: str, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "p.yaml")
        path.write_text(f'version: 1\nrules:\n  - {{id: w, allow: [connect], hosts: ["*.{apex}"]}}\n')
        p = load_policy(path, workspace=WS, home=HOME, env={})

    def host(name: str) -> str:
        return (name.upper() if suffix == "X" else name + suffix) + ":443"

    assert p.decide(act(f"connect {host(apex)}")).verdict is Verdict.DENY
    assert p.decide(act(f"connect {host(label + apex)}")).verdict is Verdict.DENY
    assert p.decide(act(f"connect {host(label + '.' + apex)}")).rule_id == "w"


LISTEN = """
version: 1
defaults: {file: deny, network: deny, process: allow}
rules:
  - id: dev
    allow: [listen]
    hosts: [127.0.0.1, localhost]
    ports: [3000, 8000-8002]
  - id: no-8001
    deny: [listen]
    hosts: ["*"]
    ports: [8001]
  - id: elsewhere
    allow: [listen]
    hosts: [example.com]
    ports: [9000]
  - id: asked
    ask: [listen]
    hosts: ["*"]
    ports: [3000]
  - id: audit-only
    allow: [listen]
    hosts: ["*"]
    ports: [7000]
    mode: audit
"""


def test_bind_ports_lists_enforced_listen_allows_minus_refusals(tmp_path: Path) -> None:
    got = load(tmp_path, LISTEN).bind_ports()
    # 3000 is asked (bind cannot wait for a human), 8001 denied, 9000 not on loopback, 7000 audit-only
    assert got.ports == (8000, 8002) and not got.any_port


def test_bind_ports_any_port_and_what_cannot_be_listed(tmp_path: Path) -> None:
    anyport = "version: 1\nrules:\n  - id: lo\n    allow: [listen]\n    hosts: [127.0.0.1]\n"
    got = load(tmp_path, anyport).bind_ports()
    assert got.ports is None and got.any_port and "'lo'" in got.reason
    minus = anyport + "  - id: no-22\n    deny: [listen]\n    hosts: ['*']\n    ports: [22]\n"
    got = load(tmp_path, minus).bind_ports()
    assert got.ports is None and not got.any_port and "no-22" in got.reason
    wide = "version: 1\nrules:\n  - id: hi\n    allow: [listen]\n    hosts: [127.0.0.1]\n    ports: [1024-65535]\n"
    got = load(tmp_path, wide).bind_ports(limit=100)
    assert got.ports is None and not got.any_port and "64512 ports" in got.reason
    assert load(tmp_path, "version: 1\nrules: []\n").bind_ports().ports == ()
    audit = "version: 1\nmode: audit\nrules: []\n"
    assert load(tmp_path, audit).bind_ports().any_port
