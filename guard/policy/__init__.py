"""guard.policy: the policy language v1 and the decision engine (pure: no I/O but reading policy files).

Load with `load_policy(ref, workspace=...)`, then `Policy.decide(action)` for a `Decision` and
`Policy.explain(action)` for why. The language is documented in docs/policy.md; the contract with the
other layers in docs/contracts.md.
"""

from guard.policy.diagnostics import Diagnostic, PolicyLoadError, Severity
from guard.policy.engine import Explanation, Loser, Policy, PolicyTest
from guard.policy.loader import compile_policy, list_shipped, load_policy, shipped_policy_path
from guard.policy.rules import FileRule, Rule

__all__ = [
    "Diagnostic",
    "Explanation",
    "FileRule",
    "Loser",
    "Policy",
    "PolicyLoadError",
    "PolicyTest",
    "Rule",
    "Severity",
    "compile_policy",
    "list_shipped",
    "load_policy",
    "shipped_policy_path",
]
