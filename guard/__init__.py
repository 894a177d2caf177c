"""guard: least-privilege sandbox, permission guard and signed audit trail for AI agents."""

__version__ = "0.1.0"
