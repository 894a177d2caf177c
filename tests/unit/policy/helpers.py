"""Small builders shared by the policy tests (imported by module path under importlib mode)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from guard.model import Action, Op, parse_action
from guard.policy import Policy, compile_policy, load_policy
from guard.policy.loader import Compiled

HOME = Path("/home/u")
WS = Path("/work/ws")


def write(tmp: Path, name: str, body: str) -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body).lstrip("\n"))
    return path


def load(tmp: Path, body: str, name: str = "p.yaml", env: dict[str, str] | None = None) -> Policy:
    return load_policy(write(tmp, name, body), workspace=WS, home=HOME, env=env or {})


def compiled(tmp: Path, body: str, name: str = "p.yaml", env: dict[str, str] | None = None) -> Compiled:
    return compile_policy(write(tmp, name, body), workspace=WS, home=HOME, env=env or {})


def errors(tmp: Path, body: str, name: str = "p.yaml") -> list[str]:
    """Every error as `FILE:LINE:COL: message`, with FILE shown as the bare file name."""
    result = compiled(tmp, body, name)
    return [str(d).replace(str(tmp) + "/", "") for d in result.errors]


def act(text: str) -> Action:
    return parse_action(text)


def file(op: str, path: str) -> Action:
    return Action(op=Op(op), target=path)
