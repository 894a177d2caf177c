"""Tool calls -> the Actions a policy governs. Pure: no I/O, paths resolved lexically against the call's cwd.

Each agent names its tools differently but they come in few kinds: run a shell command, read a file, write or
edit a file, list or search a tree, fetch a URL. A tool this module does not know yields no Action (it is
still recorded as intent, and the kernel tier still enforces whatever it does).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from guard.model import Action, Op

# tool name -> (kind, the input keys that may hold its object, in order of preference)
_SHELL = ("command", "cmd")
_PATH = ("file_path", "absolute_path", "path", "notebook_path", "dir_path", "directory")
TOOLS: dict[str, tuple[str, tuple[str, ...]]] = {
    # Claude Code (and Codex, which names its shell tool Bash in hooks)
    "Bash": ("run", _SHELL), "Read": ("read", _PATH), "Write": ("write", _PATH), "Edit": ("write", _PATH),
    "MultiEdit": ("write", _PATH), "NotebookEdit": ("write", _PATH), "Glob": ("read", _PATH),
    "Grep": ("read", _PATH), "LS": ("read", _PATH), "WebFetch": ("fetch", ("url",)),
    "apply_patch": ("patch", ("command", "input", "patch")),
    # Gemini CLI
    "run_shell_command": ("run", _SHELL), "read_file": ("read", _PATH),
    "read_many_files": ("read", ("paths",)), "write_file": ("write", _PATH), "replace": ("write", _PATH),
    "list_directory": ("read", _PATH), "glob": ("read", _PATH), "search_file_content": ("read", _PATH),
    "web_fetch": ("fetch", ("prompt", "url")),
    # Cursor's hook events carry no tool name; protocols maps them onto these
    "shell": ("run", _SHELL), "read": ("read", _PATH), "edit": ("write", _PATH),
}


def actions_for(tool: str, tool_input: Mapping[str, Any], cwd: str) -> list[Action]:
    """The Actions a tool call would perform, as the policy names them."""
    kind, keys = TOOLS.get(tool, ("", ()))
    if not kind:
        return []
    if kind == "run":
        command = _first_str(tool_input, keys)
        return [Action(Op.RUN, command, cwd=cwd)] if command else []
    if kind == "fetch":
        return [Action(Op.CONNECT, t) for t in _url_targets(tool_input, keys)]
    if kind == "patch":
        return [Action(Op.WRITE, _absolute(p, cwd)) for p in _patch_paths(_first_str(tool_input, keys))]
    op = Op.READ if kind == "read" else Op.WRITE
    paths = _paths(tool_input, keys)
    return [Action(op, _absolute(p, cwd)) for p in paths] or ([Action(op, _absolute(".", cwd))]
                                                             if op is Op.READ else [])


def _first_str(data: Mapping[str, Any], keys: tuple[str, ...]) -> str:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return " ".join(value)  # Codex's older shell tool takes an argv list
    return ""


def _paths(data: Mapping[str, Any], keys: tuple[str, ...]) -> list[str]:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str) and value:
            return [value]
        if isinstance(value, list) and value:
            return [v for v in value if isinstance(v, str) and v]
    return []


def _absolute(path: str, cwd: str) -> str:
    """Lexically absolute, `~` expanded by the agent's HOME: the sandbox's decisions see the real path."""
    if path.startswith("~"):
        path = os.path.expanduser(path)
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(cwd or "/", path))


def _url_targets(data: Mapping[str, Any], keys: tuple[str, ...]) -> list[str]:
    text = " ".join(str(data.get(k, "")) for k in keys)
    targets = []
    for word in text.split():
        if "://" not in word:
            continue
        parts = urlsplit(word.strip("()<>[]'\","))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            continue
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            continue
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        targets.append(f"{host}:{port}")
    return targets


def _patch_paths(patch: str) -> list[str]:
    """Files an apply_patch envelope touches (`*** Add File: p`, `*** Update File: p`, `*** Move to: p`)."""
    found = []
    for line in patch.splitlines():
        for marker in ("*** Add File: ", "*** Update File: ", "*** Delete File: ", "*** Move to: "):
            if line.startswith(marker):
                found.append(line[len(marker):].strip())
    return found
