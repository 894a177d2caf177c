"""`mode: audit` (or `guard run --audit`): decide, record, let through, at the kernel tier too.

A security team rolls a policy out in audit mode to learn what it would refuse without breaking anyone's
work. So what the enforced policy refuses must work here, each refusal-to-be recorded with audit_only;
only the guard's own state and host-wide kernel state stay out of reach.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(120)


def _audit_policy(world):
    path = world.root / "policies" / "audit.yaml"
    path.write_text("version: 1\nname: audit-rollout\nextends: [coding-agent]\nmode: audit\n")
    return path


def _recorded(world, run, op: str, target) -> list[dict]:
    return [r["decision"] for r in world.records(run.session)
            if r.get("type") == "decision" and r["action"]["op"] == op
            and r["action"].get("target") == str(target)]


@pytest.mark.parametrize("how", ["policy", "flag"])
def test_audit_mode_lets_through_and_records(world, how):
    rc = world.home / ".bashrc"
    before = rc.read_text()
    script = (f'echo "# audit-{how}" >> "{rc}" && cat "{world.ssh_key}" && mkdir -p "{world.outside}/made-{how}" '
              f'&& echo AUDIT-OK')
    if how == "policy":
        run = world.guard_run(world.sh(script), policy=_audit_policy(world))
    else:
        run = world.guard_run(world.sh(script), extra_args=["--audit"])
    try:
        assert run.returncode == 0 and "AUDIT-OK" in run.stdout, run
        assert world.ssh_secret in run.stdout, run
        assert rc.read_text().endswith(f"# audit-{how}\n")
        assert (world.outside / f"made-{how}").is_dir()
        assert "audit mode" in run.stderr, run
        decisions = _recorded(world, run, "write", rc)
        assert decisions and all(d["verdict"] == "deny" and d["audit_only"] for d in decisions), decisions
        assert run.summary["denied"] == 0 or all(d["audit_only"] for d in decisions), run
    finally:
        rc.write_text(before)


def test_audit_mode_still_hides_the_guards_own_state(world):
    attack = world.sh(f'ls "{world.gh}" && cat "{world.gh}"/keys/* | head -c 100')
    assert world.bare_run(attack).returncode == 0
    run = world.guard_run(attack, extra_args=["--audit"])
    assert run.returncode != 0 or run.stdout.strip() == "", run


def test_audit_mode_never_writes_host_kernel_state(world):
    """/proc/sys is host-wide: writing its current value back works bare (as root) and changes nothing."""
    attack = world.sh("v=$(cat /proc/sys/vm/swappiness) && echo $v > /proc/sys/vm/swappiness && echo WROTE")
    bare = world.bare_run(attack)
    if "WROTE" not in bare.stdout:
        pytest.skip(f"not writable here even bare (not root): {bare.stderr.strip()}")
    run = world.guard_run(attack, extra_args=["--audit"])
    assert "WROTE" not in run.stdout, run
    refusals = [r["decision"] for r in world.records(run.session) if r.get("type") == "decision"
                and r["action"]["target"] == "/proc/sys/vm/swappiness"]
    assert refusals and all(d["verdict"] == "deny" and not d.get("audit_only") for d in refusals), refusals


def test_zz_trail_verifies(world):
    world.check_trail()
