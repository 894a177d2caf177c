"""How a policy reference is read: a shipped policy's name or a file (without importing the loader)."""

from __future__ import annotations


def is_policy_name(ref: str) -> bool:
    """True when `ref` names a shipped policy rather than a file (how load_policy reads it)."""
    return "/" not in ref and not ref.endswith((".yaml", ".yml")) and ref not in ("", ".", "..")
