"""Agent configuration that can start programs: what in each file starts one, and whether a save changes it.

Claude Code keeps its MCP servers (each a command line it starts) in `~/.claude.json`, and rewrites that
file constantly (trust dialog, counters, tips) by writing `~/.claude.json.tmp.*` and renaming it over the
original. An ask on every save would drown the engineer; no ask lets an agent add a server that runs
outside any sandbox the next time the engineer starts Claude. So such files are judged on content: a save
that leaves every program-starting entry as it was is an ordinary write; one that adds or changes one is
judged as a write to the file's `#programs` name (`~/.claude.json#programs`), which the policy's
agent-settings rule asks a human about. The same extraction serves every agent config file that can start
programs (Codex, Gemini CLI, Cursor, VS Code tasks, Claude's settings hooks), so they are treated alike.

Where it is called: the supervisor's rename decision (a complete new file replacing a watched one), with
the source's bytes and the current target's bytes read through the descriptors it already resolved; a
direct write-open of a watched file cannot be judged on content (the bytes come later) and is decided as
a write to its `#programs` name. Pure: bytes in, a reason or None out.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from guard.model import Action, Op

PROGRAMS_SUFFIX = "#programs"
MAX_BYTES = 8 * 1024 * 1024
_TRAILING_COMMA = re.compile(r",\s*([}\]])")  # larger files are not parsed: judged as changed (fail closed)

Extract = Callable[[Any], dict[str, Any]]


def _keys(*names: str) -> Extract:
    def pick(doc: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if not isinstance(doc, Mapping):
            return out
        for name in names:
            node: Any = doc
            for part in name.split("."):
                node = node.get(part) if isinstance(node, Mapping) else None
            if node is not None:
                out[name] = node
        return out
    return pick


_CLAUDE_SETTINGS = _keys("hooks", "statusLine", "apiKeyHelper", "awsAuthRefresh", "awsCredentialExport",
                         "otelHeadersHelper", "enableAllProjectMcpServers", "enabledMcpjsonServers",
                         "mcpServers", "permissions")


def _claude_json(doc: Any) -> dict[str, Any]:
    """Top-level MCP servers and approvals, and the same per project."""
    out = _keys("mcpServers", "enableAllProjectMcpServers", "enabledMcpjsonServers")(doc)
    projects = doc.get("projects") if isinstance(doc, Mapping) else None
    if isinstance(projects, Mapping):
        for path, project in sorted(projects.items()):
            for key, value in _keys("mcpServers", "enableAllProjectMcpServers",
                                    "enabledMcpjsonServers")(project).items():
                out[f"projects[{path}].{key}"] = value
    return out


_GEMINI_SETTINGS = _keys("mcpServers", "hooks", "tools.discoveryCommand", "tools.callCommand",
                         "toolDiscoveryCommand", "toolCallCommand")

# (basename glob, parent directory name or "" for any, format, extractor)
_WATCHED: tuple[tuple[str, str, str, Extract], ...] = (
    (".claude.json", "", "json", _claude_json),
    ("settings.json", ".claude", "json", _CLAUDE_SETTINGS),
    ("settings.local.json", ".claude", "json", _CLAUDE_SETTINGS),
    ("config.toml", ".codex", "toml", _keys("mcp_servers", "notify")),
    ("settings.json", ".gemini", "json", _GEMINI_SETTINGS),
    ("mcp.json", ".cursor", "json", _keys("mcpServers")),
    ("cli-config.json", ".cursor", "json", _keys("permissions")),
    ("tasks.json", ".vscode", "jsonc", _keys("tasks")),
    (".mcp.json", "", "json", _keys("mcpServers")),
)


def watched_names() -> list[str]:
    """The name globs of every watched config: the compiled fast path hands such names to Python, which
    judges them on content (guard.sandbox.fastpath)."""
    return [glob for glob, _in_dir, _fmt, _extract in _WATCHED]


def watched(path: str) -> tuple[str, Extract] | None:
    """(format, extractor) when `path` is an agent config file that can start programs."""
    base = os.path.basename(path)
    parent = os.path.basename(os.path.dirname(path))
    for glob, in_dir, fmt, extract in _WATCHED:
        if fnmatch.fnmatchcase(base, glob) and (not in_dir or parent == in_dir):
            return fmt, extract
    return None


def _parse(fmt: str, data: bytes) -> Any:
    if len(data) > MAX_BYTES:
        raise ValueError(f"larger than {MAX_BYTES} bytes")
    text = data.decode("utf-8")
    if fmt == "toml":
        import tomllib  # here: its import is ~5 ms of every launch, and few sessions save a TOML config

        return tomllib.loads(text)
    if fmt == "jsonc":
        text = _strip_jsonc(text)
    return json.loads(text) if text.strip() else {}


def _strip_jsonc(text: str) -> str:
    """VS Code's JSON with comments and trailing commas, reduced to JSON (strings left intact)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("//", i):
            i = text.find("\n", i) if "\n" in text[i:] else n
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            out.append(c)
            i += 1
    # trailing commas; a string that happens to hold ", }" is changed too, which can only make a save
    # look changed (an ask), never hide a change
    return _TRAILING_COMMA.sub(r"\1", "".join(out))


def program_entries(path: str, data: bytes) -> dict[str, Any] | None:
    """The program-starting entries of `data` as the file at `path`; None when it cannot be read."""
    spec = watched(path)
    if spec is None:
        return {}
    fmt, extract = spec
    try:
        return extract(_parse(fmt, data))
    except (ValueError, UnicodeDecodeError):  # tomllib.TOMLDecodeError is a ValueError
        return None


def program_change(path: str, old: bytes | None, new: bytes) -> str | None:
    """Why replacing `old` (None: no file yet) with `new` at `path` changes what can start programs, or
    None when it does not (and the save is an ordinary write)."""
    if watched(path) is None:
        return None
    after = program_entries(path, new)
    if after is None:
        return f"{path}: the new content cannot be read, so its program-starting entries cannot be checked"
    before = program_entries(path, old) if old is not None else {}
    if before is None:
        before = {}
    added = sorted(k for k in after if k not in before)
    changed = sorted(k for k in after if k in before and _canon(after[k]) != _canon(before[k]))
    if not added and not changed:
        return None
    parts = ([f"adds {', '.join(added)}"] if added else []) + (
        [f"changes {', '.join(changed)}"] if changed else [])
    return f"{path}: the save {' and '.join(parts)} (entries that start programs)"


def programs_target(path: str) -> str:
    """The name a program-changing save of `path` is decided as (policy rules name it)."""
    return path + PROGRAMS_SUFFIX


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _read_at(parent: int, name: str) -> bytes | None:
    """The bytes of `name` in the held directory `parent` (never through a symlink); None when absent."""
    try:
        return read_config(name, dir_fd=parent)
    except FileNotFoundError:
        return None


def read_config(name: str, *, dir_fd: int | None = None) -> bytes:
    """The bytes of a config file, never through a symlink and never more than just past MAX_BYTES (a
    larger file is judged as changed, fail closed); raises OSError."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_BYTES:
                break
        return b"".join(chunks)
    finally:
        os.close(fd)


def rename_programs_action(src: tuple[int, str], dst: tuple[int, str], dst_path: str,
                           pid: int | None) -> Action | None:
    """For the supervisor's rename decision: the extra action to decide when the rename replaces a watched
    agent config with content that adds or changes what starts programs (None: an ordinary save). The
    source is read as it is at the decision; a writer that keeps changing it after is the documented
    check-then-continue race of renames."""
    if watched(dst_path) is None:
        return None
    try:
        new = _read_at(*src)
        old = _read_at(*dst)
    except OSError:
        new = None
        old = None
    if new is None or program_change(dst_path, old, new) is not None:
        return Action(Op.WRITE, programs_target(dst_path), pid=pid)
    return None
