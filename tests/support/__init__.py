"""Helpers shared by several test modules (pytest puts tests/ on sys.path: `from support import ...`)."""
