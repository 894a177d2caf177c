"""`guard policy lint|test|explain|diff|learn`: write, test, understand and learn policies.

Commands only parse, call guard.policy and render: a table-like text for people, `--json` for tools.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from guard.cli.output import say
from guard.errors import UsageError
from guard.model import Op, Verdict
from guard.policy import Explanation, Policy, compile_policy, load_policy
from guard.policy.lint import lint as lint_policy
from guard.policy.lint import own_rule_ids
from guard.policy.testing import TestReport, run_tests

_workspace_option = click.option(
    "--workspace", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Directory that ${workspace} stands for (default: the current directory).")
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for tools instead of text.")


# Inline tests must not depend on where they are run (a workspace of / or $HOME would grant everything),
# so lint, test and diff judge them against this fixed, non-existent workspace unless told otherwise.
TEST_WORKSPACE = Path("/guard-test-workspace")
_test_workspace_option = click.option(
    "--workspace", type=click.Path(file_okay=False, path_type=Path), default=None,
    help=f"Directory that ${{workspace}} stands for in the tests (default: {TEST_WORKSPACE}).")


def _workspace(value: Path | None, default: Path | None = None) -> Path:
    return (value or default or Path.cwd()).absolute()


def _emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


@click.group()
def policy() -> None:
    """Lint, test, explain and compare policies."""


@policy.command()
@click.argument("files", nargs=-1, required=True)
@_test_workspace_option
@_json_option
def lint(files: tuple[str, ...], workspace: Path | None, as_json: bool) -> None:
    """Report every error (FILE:LINE:COL: message) and warning in each policy; exit 1 on any error."""
    reports = [lint_policy(ref, workspace=_workspace(workspace, TEST_WORKSPACE)) for ref in files]
    if as_json:
        _emit({"ok": all(r.ok for r in reports), "policies": [r.to_dict() for r in reports]})
    else:
        for report in reports:
            for diag in report.diagnostics:
                say(str(diag), err=diag.severity.value == "error")
            errors = sum(1 for d in report.diagnostics if d.severity.value == "error")
            warnings = len(report.diagnostics) - errors
            status = "ok" if report.ok else "FAILED"
            say(f"{report.ref}: {status} ({errors} error(s), {warnings} warning(s))")
    sys.exit(0 if all(r.ok for r in reports) else 1)


@policy.command()
@click.argument("files", nargs=-1, required=True)
@_test_workspace_option
@_json_option
def test(files: tuple[str, ...], workspace: Path | None, as_json: bool) -> None:
    """Run each policy's inline tests; print failures with their location; exit 1 on any failure."""
    ok = True
    out: list[dict[str, Any]] = []
    for ref in files:
        compiled = compile_policy(ref, workspace=_workspace(workspace, TEST_WORKSPACE))
        if compiled.policy is None:
            ok = False
            if as_json:
                out.append({"policy": ref, "ok": False, "errors": [d.to_dict() for d in compiled.errors]})
            else:
                for diag in compiled.errors:
                    say(str(diag), err=True)
                say(f"{ref}: cannot run tests, the policy does not load")
            continue
        report = run_tests(compiled.policy, own_rule_ids(compiled))
        ok = ok and not report.failures and bool(report.results)
        if as_json:
            out.append({"file": ref, "ok": not report.failures and bool(report.results), **report.to_dict()})
        else:
            _print_test_report(ref, report)
    if as_json:
        _emit({"ok": ok, "policies": out})
    sys.exit(0 if ok else 1)


def _print_test_report(ref: str, report: TestReport) -> None:
    for result in report.failures:
        got = result.decision
        say(f"{result.test.location}: FAIL {result.test.text}: expected {result.test.expected.value}, "
            f"got {got.verdict.value} ({'rule ' + repr(got.rule_id) if got.rule_id else 'default'}: "
            f"{got.reason})")
    passed = len(report.results) - len(report.failures)
    if not report.results:
        say(f"{ref}: no tests (a policy without tests fails 'guard policy test')")
    cover = f"{len(report.covered)}/{len(report.own_rules)} rules exercised ({report.coverage:.0%})"
    missing = f"; not exercised: {', '.join(report.uncovered)}" if report.uncovered else ""
    say(f"{ref}: {passed} passed, {len(report.failures)} failed; {cover}{missing}")


@policy.command(context_settings={"ignore_unknown_options": True})
@click.argument("policy_ref", metavar="POLICY")
@click.argument("action", nargs=-1, required=True)
@_workspace_option
@click.option("--resolve", "resolve", multiple=True, metavar="NAME:ADDR",
              help="For connect: pin a name as `guard run --resolve` does.")
@click.option("--no-resolve", is_flag=True, help="For connect: do not ask what the proxy would do (no DNS).")
@_json_option
def explain(policy_ref: str, action: tuple[str, ...], workspace: Path | None, resolve: tuple[str, ...],
            no_resolve: bool, as_json: bool) -> None:
    """Decide ACTION ("read ~/.ssh/id_rsa", "connect pypi.org:443", "run git push") and say why.

    POLICY is a shipped policy name (see `guard policy list`) or a policy file. For `connect`, also
    shows what the guard's proxy would do: what the host resolves to and which addresses it would use
    (a name the policy refuses is never resolved).
    """
    from guard.cli.run import parse_resolve

    pins = parse_resolve(resolve)
    loaded = load_policy(policy_ref, workspace=_workspace(workspace))
    parsed = loaded.action(" ".join(action), cwd=os.getcwd())
    explanation = loaded.explain(parsed)
    proxy = None
    if parsed.op is Op.CONNECT and not no_resolve:
        from guard.net.explain import explain_connect

        host, port = parsed.host_port()
        if port is None:
            raise UsageError(f"connect {parsed.target!r}: name a port (host:port) to ask the proxy")
        proxy = explain_connect(loaded, host, port, resolve=pins)
    if as_json:
        # `enforced`: what guard run does with the connection: the proxy's answer, the one code path
        enforced = ({"proxy": proxy.to_dict(), "enforced": "allow" if proxy.allowed else "deny"}
                    if proxy else {})
        _emit({"policy": loaded.name, **explanation.to_dict(), **enforced})
        return
    if proxy is not None:
        # The headline is what enforcement does (the proxy's own vetting); the rule-level decision on the
        # name follows as the explanation of it.
        verdict = "ALLOW" if proxy.allowed else "DENY"
        rule = f" (rule {proxy.rule_id})" if proxy.rule_id else ""
        say(f"{verdict}  connect {proxy.host}:{proxy.port} through guard run's proxy{rule}")
        say(f"  proxy:  {proxy.reason}")
        say("  the policy's rules on it:")
        _print_explanation(loaded, explanation, "    ")
        if not proxy.allowed and explanation.decision.enforced is Verdict.ALLOW:
            say("  note:   the rules allow it, the proxy refuses where it leads; inside the sandbox a "
                       "connection to its own loopback never reaches the proxy")
        return
    _print_explanation(loaded, explanation)


def _print_explanation(loaded: Policy, exp: Explanation, indent: str = "") -> None:
    decision = exp.decision
    audit = " (audit only: not enforced)" if decision.audit_only else ""
    say(f"{indent}{decision.verdict.value.upper()}{audit}  {exp.action.op.value} {exp.subject}")
    if exp.winner is not None:
        say(f"{indent}  rule:   {exp.winner} ({exp.winner_location})")
    else:
        say(f"{indent}  rule:   none (policy {loaded.name!r} default)")
    say(f"{indent}  reason: {decision.reason}")
    if exp.note and exp.note not in decision.reason:
        say(f"{indent}  note:   {exp.note}")
    if exp.losers:
        say(f"{indent}  also matched:")
        for loser in exp.losers:
            where = f"{loser.verdict.value}, {loser.location}"
            say(f"{indent}    - {loser.rule_id} ({where}): {loser.why}")
    for i, part in enumerate(exp.parts, start=1):
        say(f"{indent}  part {i}:")
        _print_explanation(loaded, part, indent + "    ")


@policy.command(name="list")
@_json_option
def list_cmd(as_json: bool) -> None:
    """List the shipped policies."""
    from guard.policy import list_shipped, shipped_policy_path

    names = list_shipped()
    if as_json:
        _emit([{"name": n, "path": str(shipped_policy_path(n))} for n in names])
    else:
        for name in names:
            say(name)


@policy.command()
@click.argument("old")
@click.argument("new")
@_test_workspace_option
@_json_option
def diff(old: str, new: str, workspace: Path | None, as_json: bool) -> None:
    """Compare two policies: rules added, removed or changed, defaults, and test actions decided differently.

    Exit 1 when NEW loosens anything (a decision became weaker, or a default did).
    """
    ws = _workspace(workspace, TEST_WORKSPACE)
    a, b = load_policy(old, workspace=ws), load_policy(new, workspace=ws)
    rules_a = {r.id: r for r in a.rules}
    rules_b = {r.id: r for r in b.rules}
    common = rules_a.keys() & rules_b.keys()
    changed = sorted(i for i in common if _rule_key(rules_a[i]) != _rule_key(rules_b[i]))
    defaults = {k.value: [a.defaults[k].value, b.defaults[k].value] for k in a.defaults
                if a.defaults[k] is not b.defaults[k]}
    seen: set[str] = set()
    decisions: list[dict[str, Any]] = []
    for test in (*a.tests, *b.tests):
        key = str(test.action)
        if key in seen:
            continue
        seen.add(key)
        da, db = a.decide(test.action), b.decide(test.action)
        if da.verdict is not db.verdict or da.audit_only != db.audit_only:
            decisions.append({"action": key, "old": da.to_dict(), "new": db.to_dict(),
                              "loosened": db.enforced.strength < da.enforced.strength})
    loosened = any(d["loosened"] for d in decisions) or any(
        Verdict(v[1]).strength < Verdict(v[0]).strength for v in defaults.values())
    result: dict[str, Any] = {"old": old, "new": new, "added": sorted(rules_b.keys() - rules_a.keys()),
              "removed": sorted(rules_a.keys() - rules_b.keys()), "changed": changed, "defaults": defaults,
              "mode": [a.mode, b.mode] if a.mode != b.mode else None, "decisions": decisions,
              "loosened": loosened}
    if as_json:
        _emit(result)
    else:
        for label in ("added", "removed", "changed"):
            for rule_id in result[label]:
                say(f"{label:8} rule {rule_id}")
        for kind, (va, vb) in defaults.items():
            say(f"default  {kind}: {va} -> {vb}")
        if result["mode"]:
            say(f"mode     {a.mode} -> {b.mode}")
        for d in decisions:
            flag = "  LOOSER" if d["loosened"] else ""
            say(f"decision {d['action']}: {d['old']['verdict']} -> {d['new']['verdict']}{flag}")
        if not any((result["added"], result["removed"], changed, defaults, result["mode"], decisions)):
            say("no differences")
    sys.exit(1 if loosened else 0)


def _rule_key(rule: Any) -> tuple[Any, ...]:
    return (rule.verdict, rule.ops, rule.audit_only, tuple(p.text for p in rule.paths),
            tuple(h.text for h in rule.hosts), tuple(str(c) for c in rule.cidrs),
            tuple(str(p) for p in rule.ports),
            tuple(c.text for c in rule.commands), tuple(p.text for p in rule.except_paths),
            tuple(h.text for h in rule.except_hosts), tuple(str(c) for c in rule.except_cidrs),
            tuple(c.text for c in rule.except_commands))


@policy.command()
@click.option("--session", "sessions", multiple=True, required=True,
              help="A session (id or unique prefix) whose needs to learn from; repeat for several.")
@click.option("--base", default="coding-agent", show_default=True,
              help="The policy to extend: a shipped name or a policy file.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the learned policy.")
@click.option("--name", default="learned", show_default=True, help="The learned policy's name.")
@click.option("--log", "log", type=click.Path(file_okay=False, path_type=Path),
              help="Log directory (default: $GUARD_HOME/log).")
def learn(sessions: tuple[str, ...], base: str, output: Path, name: str, log: Path | None) -> None:
    """Propose the smallest policy extending BASE that would have allowed what the sessions needed.

    Learns from what the trail recorded as denied or asked (record first with a policy in `mode: audit`
    to see everything a workload needs without blocking it). Never grants what BASE decides by an
    explicit rule (credentials, persistence files, asks): those are listed instead. The output is linted
    and checked against every observation before this command succeeds.
    """
    from guard.audit.export import iter_records
    from guard.audit.report import text
    from guard.cli.audit import select_session, session_starts
    from guard.home import guard_home, log_dir
    from guard.policy.learn import learn as learn_policy
    from guard.policy.learn import observations, render
    from guard.policy.refs import is_policy_name

    path = log or log_dir(guard_home())
    starts = session_starts(path)
    ids = list(dict.fromkeys(select_session(starts, s) for s in sessions))
    chosen = (r for _data, r in iter_records(path) if r.get("session") in ids)
    found = observations(chosen, text=text)
    compiled: dict[str, Policy] = {}

    def base_for(workspace: str) -> Policy:
        if workspace not in compiled:
            compiled[workspace] = load_policy(base, workspace=Path(workspace or TEST_WORKSPACE))
        return compiled[workspace]

    home = os.environ.get("HOME", str(Path.home()))
    proposal = learn_policy(found, base_for, base=base, home=home, sessions=ids)
    extends = base if is_policy_name(base) else str(Path(base).resolve())
    try:
        output.write_text(render(proposal, name=name, extends=extends), encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{output}: cannot write: {exc.strerror}") from None
    _check_learned(output, proposal.granted)
    click.echo(f"{output}: {len(proposal.rules)} rule(s) granting {len(proposal.granted)} observed action(s) "
               f"of {len(ids)} session(s) on top of {base}; {len(proposal.tests)} inline test(s)")
    for refusal in proposal.refused:
        click.echo(f"not granted: {refusal.op} {refusal.target}: {refusal.verdict} by rule {refusal.rule_id} "
                   f"({refusal.reason.strip()})")
    click.echo(f"next: guard policy diff {base} {output}")


def _check_learned(output: Path, granted: Any) -> None:
    """The learned file must lint clean and allow every observation it claims to grant."""
    report = lint_policy(str(output), workspace=TEST_WORKSPACE)
    errors = [d for d in report.diagnostics if d.severity.value == "error"]
    if errors:
        raise UsageError(f"{output}: the learned policy does not lint: {errors[0]}",
                         hint="this is a bug in guard policy learn; please report it with the file")
    by_workspace: dict[str, Policy] = {}
    for obs in granted:
        ws = obs.workspace or str(TEST_WORKSPACE)
        if ws not in by_workspace:
            by_workspace[ws] = load_policy(str(output), workspace=Path(ws))
        decision = by_workspace[ws].decide(obs.action())
        if decision.enforced is not Verdict.ALLOW:
            raise UsageError(f"{output}: the learned policy still refuses {obs.op.value} {obs.target} "
                             f"({decision.rule_id or 'default'}: {decision.reason})",
                             hint="this is a bug in guard policy learn; please report it with the file")
