#!/usr/bin/env python3
"""Benchmark the policy engine at 1,000 rules against a naive scan-every-rule evaluator.

Generates a policy (file, network and command rules in realistic proportions), a mix of actions
(file reads and writes most often, then connects, then command lines), and measures per-decision latency
without the cache, throughput with the cache, and the same latency for a naive evaluator that checks
every rule, all in this run. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from guard.model import Action, Decision, Kind, Op, Verdict, split_host_port
from guard.policy import Policy, load_policy
from guard.policy._tools import line_forms
from guard.policy.hosts import normalize_host, parse_ip
from guard.policy.paths import normalize_path
from guard.policy.shell import WILDCARDS


def _codex_snapshot():  # type: ignore[no-untyped-def]
    """The Codex-like shell snapshot the unit tests use (tests/unit/policy/snapshot.py), loaded by path."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tests" / "unit" / "policy" / "snapshot.py"
    spec = importlib.util.spec_from_file_location("guard_bench_snapshot", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.codex_snapshot

HOME = "/home/dev"


def generate_policy(n_rules: int, rnd: random.Random) -> str:
    lines = ["version: 1", "defaults: {file: deny, network: deny, process: allow}", "rules:"]
    n_file, n_net = n_rules // 2, n_rules // 4
    n_cmd = n_rules - n_file - n_net
    verdicts = ["allow"] * 6 + ["deny"] * 3 + ["ask"]
    for i in range(n_file):
        v = rnd.choice(verdicts)
        shape = i % 10
        if shape < 5:
            pattern = f"/srv/project{i}/**"
        elif shape < 7:
            pattern = f"{HOME}/work/repo{i}/src/*.py"
        elif shape < 9:
            pattern = f"{HOME}/.config/tool{i}/**"
        elif i % 50 == 9:
            pattern = f"**/.secret{i}"
        else:
            pattern = f"/opt/app{i}/*/bin/**"
        ops = rnd.choice(["[read]", "[write]", "[read, write]", "[read, exec]"])
        lines.append(f'  - {{id: f{i}, {v}: {ops}, paths: ["{pattern}"]}}')
    for i in range(n_net):
        v = rnd.choice(verdicts)
        if i % 25 == 0:
            lines.append(f"  - {{id: n{i}, {v}: [connect], cidrs: [10.{i % 256}.0.0/16]}}")
        elif i % 3 == 0:
            lines.append(f'  - {{id: n{i}, {v}: [connect], hosts: ["*.svc{i}.example.net"], ports: [443]}}')
        else:
            lines.append(f"  - {{id: n{i}, {v}: [connect], hosts: [api{i}.example.com], "
                         "ports: [443, 8000-8999]}")
    for i in range(n_cmd):
        v = rnd.choice(verdicts)
        lines.append(f'  - {{id: c{i}, {v}: [run], '
                     f'commands: ["tool{i} sub{i % 7} ...", "tool{i} --force ..."]}}')
    return "\n".join(lines) + "\n"


def generate_actions(count: int, n_rules: int, rnd: random.Random) -> list[Action]:
    n_file, n_net = n_rules // 2, n_rules // 4
    n_cmd = n_rules - n_file - n_net
    out: list[Action] = []
    for _ in range(count):
        r = rnd.random()
        if r < 0.6:
            i = rnd.randrange(n_file * 2)  # half of them hit no rule
            op = rnd.choice([Op.READ, Op.READ, Op.WRITE])
            path = rnd.choice([f"/srv/project{i}/src/module{rnd.randrange(50)}.py",
                               f"{HOME}/work/repo{i}/src/main.py", f"{HOME}/.config/tool{i}/config.toml",
                               f"/usr/lib/python3/dist-packages/pkg{i}/__init__.py"])
            out.append(Action(op, path))
        elif r < 0.85:
            i = rnd.randrange(n_net * 2)
            host = rnd.choice([f"api{i}.example.com:443", f"a.svc{i}.example.net:443",
                               f"cdn{i}.example.org:443"])
            out.append(Action(Op.CONNECT, host, addresses=(f"10.{i % 256}.1.1",) if i % 5 == 0 else ()))
        else:
            i = rnd.randrange(n_cmd * 2)
            line = rnd.choice([f"tool{i} sub{i % 7} --flag x", f"git status && tool{i} --force y",
                               f"FOO=1 timeout 5 tool{i} other"])
            out.append(Action(Op.RUN, line))
    return out


def naive_decide(policy: Policy, action: Action) -> Decision:
    """The same semantics without any index: every rule is tried (audit mode ignored, none generated)."""
    best = None
    best_key: tuple[int, int, str] | None = None

    def consider(rule: object, spec: int, excluded: bool) -> None:
        nonlocal best, best_key
        if spec < 0 or excluded:
            return
        key = (-rule.strength, -spec, rule.id)  # type: ignore[attr-defined]
        if best_key is None or key < best_key:
            best, best_key = rule, key

    if action.kind is Kind.FILE:
        path = normalize_path(action.target)
        for rule in policy.rules:
            if action.op in rule.ops:
                spec = rule.match_path(path)
                consider(rule, spec, spec >= 0 and rule.path_excluded_by(path) is not None)
    elif action.kind is Kind.NETWORK:
        raw, port = split_host_port(action.target)
        host = normalize_host(raw)
        ips = tuple(ip for ip in (parse_ip(a) for a in action.addresses) if ip is not None)
        for rule in policy.rules:
            if action.op in rule.ops:
                spec = rule.match_network(host, port, ips)
                consider(rule, spec, spec >= 0 and rule.network_excluded_by(host, ips) is not None)
    else:
        worst: Decision | None = None
        for form in line_forms(action.target):  # the same readings; every rule tried on each
            best, best_key = None, None
            argv = form.words
            uncertain = any(w in WILDCARDS for w in argv)
            for rule in policy.rules:
                if action.op in rule.ops:
                    if uncertain:
                        spec = max((p.specificity for p in rule.commands if p.could_match(argv)), default=-1)
                        consider(rule, spec, False)
                    else:
                        spec = rule.match_command(argv, loose=form.loose)
                        consider(rule, spec, spec >= 0 and not form.loose
                                 and rule.command_excluded_by(argv) is not None)
            d = Decision(best.verdict, best.id, "") if best is not None else \
                Decision(policy.defaults[Kind.PROCESS], None, "")  # type: ignore[attr-defined]
            if worst is None or d.verdict.strength > worst.verdict.strength:
                worst = d
        return worst or Decision(policy.defaults[Kind.PROCESS], None, "")
    if best is None:
        return Decision(policy.defaults[action.kind], None, "")
    return Decision(best.verdict, best.id, "")  # type: ignore[attr-defined]


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def time_each(fn, actions: list[Action]) -> list[float]:  # type: ignore[no-untyped-def]
    clock = time.perf_counter_ns
    out = []
    for action in actions:
        t0 = clock()
        fn(action)
        out.append((clock() - t0) / 1000)
    return out


def bench_snapshot(rounds: int = 400) -> dict[str, object]:
    """Decide the exec of Codex's `bash -lc SNAPSHOT` the way the supervisor hands it over (argv and the
    resolved executable), each time with a different command at the end, under the shipped coding-agent
    policy: the preamble is read once and resumed after (guard/policy/shell.py), the command each time."""
    import shlex

    codex_snapshot = _codex_snapshot()
    policy = load_policy("coding-agent", workspace=Path("/work/ws"), home=Path(HOME), env={})
    commands = [f"pytest -q tests/test_{i}.py" if i % 4 else f"git push --force origin b{i}"
                for i in range(rounds)]
    scripts = [codex_snapshot(c) for c in commands]
    words = len(scripts[0].split())

    def action(script: str) -> Action:
        argv = ("bash", "-lc", script)
        return Action(Op.RUN, shlex.join(argv), argv=argv, exe="/usr/bin/bash")

    clock = time.perf_counter_ns
    t0 = clock()
    policy.decide_uncached(action(codex_snapshot("make")))
    first = (clock() - t0) / 1000
    verdicts = {v.value: 0 for v in Verdict}
    timings = []
    for script in scripts:
        a = action(script)
        t0 = clock()
        d = policy.decide_uncached(a)
        timings.append((clock() - t0) / 1000)
        verdicts[d.verdict.value] += 1
    lines = [Action(Op.RUN, shlex.join(["bash", "-lc", s])) for s in scripts[:100]]
    line_timings = time_each(policy.decide_uncached, lines)
    return {"words": words, "first_us": round(first, 1), "exec_p50_us": round(statistics.median(timings), 1),
            "exec_p99_us": round(percentile(timings, 0.99), 1),
            "line_p50_us": round(statistics.median(line_timings), 1), "verdicts": verdicts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--actions", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rnd = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(generate_policy(args.rules, rnd))
        t0 = time.perf_counter()
        policy = load_policy(path, workspace=Path(tmp), home=Path(HOME), env={})
        load_ms = (time.perf_counter() - t0) * 1000
    actions = generate_actions(args.actions, args.rules, rnd)

    mismatches = sum(1 for a in actions[:2000]
                     if policy.decide_uncached(a).verdict is not naive_decide(policy, a).verdict)
    verdicts = {v.value: 0 for v in Verdict}
    for a in actions:
        verdicts[policy.decide_uncached(a).verdict.value] += 1

    time_each(policy.decide_uncached, actions[:2000])  # warm up
    uncached = time_each(policy.decide_uncached, actions)
    naive = time_each(lambda a: naive_decide(policy, a), actions[: max(2000, args.actions // 5)])

    hot = actions[:4096]
    for a in hot:
        policy.decide(a)
    rounds = max(1, 2_000_000 // len(hot))
    decide = policy.decide
    t0 = time.perf_counter()
    for _ in range(rounds):
        for a in hot:
            decide(a)
    cached_per_s = rounds * len(hot) / (time.perf_counter() - t0)

    snapshot = bench_snapshot()

    result = {
        "rules": len(policy.rules),
        "actions": len(actions),
        "verdicts": verdicts,
        "load_ms": round(load_ms, 1),
        "uncached_p50_us": round(statistics.median(uncached), 2),
        "uncached_p99_us": round(percentile(uncached, 0.99), 2),
        "cached_per_s": int(cached_per_s),
        "naive_uncached_p50_us": round(statistics.median(naive), 2),
        "naive_uncached_p99_us": round(percentile(naive, 0.99), 2),
        "speedup_p50_vs_naive": round(statistics.median(naive) / statistics.median(uncached), 1),
        "verdict_mismatches_vs_naive": mismatches,
        "snapshot": snapshot,
        "targets": {"uncached_p50_us": 10, "cached_per_s": 1_000_000, "snapshot_exec_p50_us": 1000},
    }
    print(f"policy of {result['rules']} rules loaded in {result['load_ms']} ms; verdicts {verdicts}")
    print(f"indexed uncached p50 {result['uncached_p50_us']} us, p99 {result['uncached_p99_us']} us; "
          f"naive p50 {result['naive_uncached_p50_us']} us ({result['speedup_p50_vs_naive']}x slower)")
    print(f"cached {result['cached_per_s']:,} decisions/s")
    print(f"codex-like {snapshot['words']}-word `bash -lc SCRIPT` exec, a new command each time "
          "(coding-agent): "
          f"p50 {snapshot['exec_p50_us']} us, p99 {snapshot['exec_p99_us']} us; first sight "
          f"{snapshot['first_us']} us; as a typed line p50 {snapshot['line_p50_us']} us; "
          f"verdicts {snapshot['verdicts']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
