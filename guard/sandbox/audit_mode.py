"""What audit mode still refuses at the decision tier: writes to host-wide kernel state and devices.

In audit mode every decision is audit-only, so the supervisor lets a refused write-open through by opening
the file itself. Under /proc, /sys and /dev that would write host-wide state (a sysctl, a block device)
with the guard's own credentials: there a write the policy refuses is refused, audit mode or not, and
recorded as the supervisor's own refusal (not as an audit-only verdict, which would say it went through).
"""

from __future__ import annotations

from collections.abc import Callable

from guard.model import Action, Decision, Op, Verdict
from guard.sandbox.plan import AUDIT_NEVER_WRITABLE
from guard.sandbox.scan import is_beneath

Decide = Callable[[Action], Decision]


def enforce_kernel_state(decide: Decide, check: Decide) -> Decide:
    """`decide`, except for writes under /proc, /sys or /dev that the policy (`check`: its answer,
    recording nothing) does not allow: those are refused by the supervisor's own rule."""
    from guard.sandbox.supervisor import SUPERVISOR_RULE

    def decide_keeping_kernel_state(action: Action) -> Decision:
        if action.op is Op.WRITE and any(is_beneath(action.target, p) for p in AUDIT_NEVER_WRITABLE):
            verdict = check(action)
            if verdict.verdict is not Verdict.ALLOW:
                return Decision(Verdict.DENY, SUPERVISOR_RULE,
                                f"refused in audit mode too (host kernel state and devices): "
                                f"{verdict.rule_id or 'default'}: {verdict.reason}")
        return decide(action)

    return decide_keeping_kernel_state
