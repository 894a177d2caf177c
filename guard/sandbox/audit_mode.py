"""What audit mode still refuses at the decision tier: writes to host-wide kernel state and devices.

In audit mode every decision is audit-only, so the supervisor lets a refused write-open through by opening
the file itself. Under /proc, /sys and /dev that would write host-wide state (a sysctl, a block device)
with the guard's own credentials: there the policy's verdict is enforced as it stands, audit mode or not.
"""

from __future__ import annotations

from collections.abc import Callable

from guard.model import Action, Decision, Op
from guard.sandbox.plan import AUDIT_NEVER_WRITABLE
from guard.sandbox.scan import is_beneath


def enforce_kernel_state(decide: Callable[[Action], Decision]) -> Callable[[Action], Decision]:
    """`decide`, except that an audit-only verdict on a write under /proc, /sys or /dev is enforced."""
    def decide_keeping_kernel_state(action: Action) -> Decision:
        decision = decide(action)
        if (decision.audit_only and action.op is Op.WRITE
                and any(is_beneath(action.target, p) for p in AUDIT_NEVER_WRITABLE)):
            return Decision(decision.verdict, decision.rule_id,
                            f"{decision.reason} (enforced in audit mode too: host kernel state and devices)")
        return decision

    return decide_keeping_kernel_state
