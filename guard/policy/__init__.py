"""guard.policy: the policy language v1 and the decision engine (pure: no I/O but reading policy files).

Load with `load_policy(ref, workspace=...)`, then `Policy.decide(action)` for a `Decision` and
`Policy.explain(action)` for why. The language is documented in docs/policy.md; the contract with the
other layers in docs/contracts.md.

The names below are loaded on first use (PEP 562): a launch that takes its compiled policy from the cache
(guard.policy_cache) decides with the engine and never needs the YAML reader, whose import alone was a
tenth of `guard run`'s start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from guard.lazy import lazy_names

if TYPE_CHECKING:
    from guard.policy.diagnostics import Diagnostic, PolicyLoadError, Severity
    from guard.policy.engine import Explanation, Loser, Policy, PolicyTest
    from guard.policy.loader import compile_policy, list_shipped, load_policy, shipped_policy_path
    from guard.policy.rules import FileRule, Rule

_WHERE = {
    "Diagnostic": "diagnostics", "PolicyLoadError": "diagnostics", "Severity": "diagnostics",
    "Explanation": "engine", "Loser": "engine", "Policy": "engine", "PolicyTest": "engine",
    "compile_policy": "loader", "list_shipped": "loader", "load_policy": "loader",
    "shipped_policy_path": "loader", "FileRule": "rules", "Rule": "rules",
}

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


__getattr__, __dir__ = lazy_names("guard.policy", _WHERE)
