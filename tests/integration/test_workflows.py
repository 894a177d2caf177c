"""Real developer workflows, each run bare and under `guard run` with the default policy, in a realistic home.

An honest session of a common tool must give the same result under guard as bare and end with 0 denied,
or "N denied" stops meaning anything and people learn to ignore it. Each workflow here runs twice in the
same world (RealHome: the workspace `~/src/proj` is an existing repository with a submodule and a linked
worktree, dotfiles and fake credentials around it): once bare, once guarded, each in a directory of its own
inside the workspace. Both runs must exit the same and print the same (paths normalised), and the guarded
session's trail must hold no denial but those the README lists as refused on purpose, named per workflow.

Everything is offline and on loopback: wheels are built here with `zipfile`, the package index is a
`http.server` on the host's 127.0.0.1 reached through guard's relay, npm installs a local tarball, cargo
builds a crate with no dependencies. A tool that is missing skips its workflow with the reason.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import http.server
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.daemon import GUARD, wait_until
from support.realworld import SYSTEM_PATH, RealHome

pytestmark = pytest.mark.timeout(300)  # two runs of a whole workflow each, on a shared 2-core machine

PY = sys.executable
TIMEOUT = 240
SUMMARY = re.compile(r"^guard: session (?P<id>[0-9a-f]+) exited (?P<status>\d+): (?P<denied>\d+) denied", re.M)


def summary_of(stderr: str) -> dict[str, str]:
    found = list(SUMMARY.finditer(stderr))
    assert found, f"no summary line on stderr: {stderr[-3000:]!r}"
    return found[-1].groupdict()


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    denied: int = 0
    session: str = ""


@dataclass
class World:
    real: RealHome
    ws: Path
    env: dict[str, str]

    @property
    def home(self) -> Path:
        return self.real.home


@pytest.fixture
def world(isolated_home: Path, guard_daemon: subprocess.Popen[bytes]) -> World:
    real = RealHome(isolated_home.parent).build()
    env = {**os.environ, "PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "PIP_NO_INPUT": "1", "NPM_CONFIG_UPDATE_NOTIFIER": "false", "NPM_CONFIG_FUND": "false",
           "NPM_CONFIG_AUDIT": "false", "CARGO_NET_OFFLINE": "true", "PYTHONDONTWRITEBYTECODE": "1"}
    for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "CARGO_HOME", "RUSTUP_HOME"):
        env.pop(name, None)
    return World(real, real.ws, env)


def _records(world: World, session: str) -> list[dict[str, Any]]:
    """The session's records once its end record is in the trail (the daemon ingests asynchronously)."""
    rows: list[dict[str, Any]] = []

    def ended() -> bool:
        nonlocal rows
        shown = subprocess.run([*GUARD, "audit", "show", "--session", session, "--json"], cwd=world.ws,
                               env=world.env, capture_output=True, text=True, timeout=120, check=False)
        rows = [json.loads(line) for line in shown.stdout.splitlines() if line.strip()]
        return any(r.get("type") == "session" and r.get("event") == "end" for r in rows)

    wait_until(ended, timeout=30, what=f"the end record of session {session}", interval=0.1)
    return rows


def _denials(world: World, session: str) -> list[str]:
    rows = _records(world, session)
    out = []
    for r in rows:  # a refused decision, an ask a human (or the timeout) denied, a refused connection
        decision = r.get("decision") or {}
        refused = decision.get("verdict") == "deny" or (
            r.get("type") in ("approval", "connection") and r.get("verdict") == "deny")
        if refused:
            action = r.get("action") or {}
            out.append(f"{action.get('op', r.get('type'))} {action.get('target', r.get('host'))} "
                       f"({decision.get('rule_id', r.get('rule_id'))})")
    return out


def bare(world: World, script: str, where: Path, env: dict[str, str] | None = None) -> Outcome:
    res = subprocess.run(["/bin/sh", "-c", script, "sh", str(where)], cwd=world.ws, env={**world.env, **(env or {})},
                         capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL, check=False)
    return Outcome(res.returncode, res.stdout, res.stderr)


def guarded(world: World, script: str, where: Path, *run_args: str,
            env: dict[str, str] | None = None) -> Outcome:
    res = subprocess.run([*GUARD, "run", *run_args, "--", "/bin/sh", "-c", script, "sh", str(where)],
                         cwd=world.ws, env={**world.env, **(env or {})}, capture_output=True, text=True,
                         timeout=TIMEOUT, stdin=subprocess.DEVNULL, check=False)
    summary = summary_of(res.stderr)
    return Outcome(res.returncode, res.stdout, res.stderr, int(summary["denied"]), summary["id"])


def both(world: World, name: str, script: str, *run_args: str, env: dict[str, str] | None = None,
         on_purpose: tuple[str, ...] = (), after_bare: Callable[[], None] | None = None) -> tuple[Outcome, Outcome]:
    """Run `script` (its $1: a fresh directory of its own in the workspace) bare, then guarded; assert the
    same exit status and output and no denial but those named in `on_purpose` (substrings of each).
    `after_bare` runs between the two (to look at what the bare run changed)."""
    dirs = {kind: world.ws / f"{name}-{kind}" for kind in ("bare", "guard")}
    for d in dirs.values():
        d.mkdir()
    started = time.perf_counter()
    b = bare(world, script, dirs["bare"], env)
    bare_s = time.perf_counter() - started
    assert b.returncode == 0, f"the workflow fails bare, so it proves nothing:\n{b.stdout}\n{b.stderr}"
    if after_bare is not None:
        after_bare()
    started = time.perf_counter()
    g = guarded(world, script, dirs["guard"], *run_args, env=env)
    guard_s = time.perf_counter() - started
    denials = _denials(world, g.session)  # the signed trail itself, not only the summary's count
    unexpected = [d for d in denials if not any(p in d for p in on_purpose)]
    assert g.returncode == b.returncode, (f"{name}: bare exited {b.returncode}, guarded {g.returncode}; "
                                          f"denials {denials}\n{g.stderr[-3000:]}")
    assert g.stdout.replace(str(dirs["guard"]), "$W") == b.stdout.replace(str(dirs["bare"]), "$W"), (
        f"{name}: output differs; denials {denials}\n{g.stderr[-2000:]}")
    assert not unexpected, f"{name}: denials nobody listed as on purpose: {unexpected}"
    assert len(denials) == g.denied, f"{name}: {g.denied} denied, but the trail shows {denials}"
    # informative only (a loaded machine makes any timing assertion flaky): scripts/bench_run.py measures
    print(f"\nWORKFLOW {name}: bare {b.returncode}, guard {g.returncode}, denied {g.denied}; "
          f"{bare_s:.2f} s bare, {guard_s:.2f} s guarded (x{guard_s / bare_s:.2f})")
    return b, g


def need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool, path=SYSTEM_PATH) is None:
            print(f"\nSKIP: {tool} is not installed")
            pytest.skip(f"{tool} is not installed")


# --- python ----------------------------------------------------------------------------------------------
def make_wheel(dist: Path, name: str = "tinypkg", version: str = "1.0") -> Path:
    """A pure-Python wheel built by hand (a zip with METADATA, WHEEL and RECORD): offline, no build backend."""
    dist.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VALUE = 42\nNAME = {name!r}\n",
        # a package's own agent notes: in site-packages they are the package's, written without asking
        f"{name}/AGENTS.md": "Run the tests.\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: guard-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    wheel = dist / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return wheel


@contextlib.contextmanager
def package_index(wheel: Path) -> Iterator[tuple[int, list[str]]]:
    """A PEP 503 simple index on the host's 127.0.0.1, serving one wheel; yields its port and the paths
    it was asked for (so a test sees the requests reached it)."""
    root = wheel.parent.parent / "index-root"
    project = root / "simple" / "tinypkg"
    project.mkdir(parents=True)
    shutil.copy(wheel, project / wheel.name)
    (project / "index.html").write_text(f'<a href="{wheel.name}">{wheel.name}</a>\n')
    (root / "simple" / "index.html").write_text('<a href="tinypkg/">tinypkg</a>\n')
    seen: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, fmt: str, *args: object) -> None:
            seen.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_python_venv_pip_install_from_wheels_and_a_local_index(world: World, tmp_path: Path) -> None:
    make_wheel(world.ws / "dist")
    wheel = make_wheel(tmp_path / "served")
    with package_index(wheel) as (port, seen):
        policy = tmp_path / "local-index.yaml"
        policy.write_text(textwrap.dedent(f"""\
            version: 1
            name: local-index
            extends: [coding-agent]
            rules:
              - id: local-index
                allow: [connect]
                cidrs: [127.0.0.1/32]
                ports: [{port}]
                reason: the team's package index on this machine
            """))
        script = (f'set -e; {PY} -m venv "$1/.venv"; V="$1/.venv/bin"; '
                  '"$V/pip" install -q --no-index --find-links dist tinypkg; '
                  '"$V/python" -c "import tinypkg; print(tinypkg.NAME, tinypkg.VALUE)"; '
                  '"$V/pip" uninstall -q -y tinypkg; '
                  f'"$V/pip" install -q --no-cache-dir --index-url http://127.0.0.1:{port}/simple/ tinypkg; '
                  '"$V/python" -c "import tinypkg, sys; print(tinypkg.__file__.startswith(sys.prefix))"; '
                  '"$V/pip" list --format=freeze | grep -i tinypkg')
        # README, "refused on purpose": pip reads ~/.netrc for credentials; the hidden file's read is recorded
        b, _ = both(world, "pip", script, "-p", str(policy), on_purpose=("/.netrc (credentials)",))
    assert b.stdout.splitlines() == ["tinypkg 42", "True", "tinypkg==1.0"]
    assert sum(1 for p in seen if p.endswith(".whl")) == 2, f"each run fetched the wheel from the index: {seen}"


def test_pytest_of_a_small_project(world: World) -> None:
    script = textwrap.dedent(f"""\
        set -e; cd "$1"; mkdir -p calc tests
        printf 'def add(a, b):\\n    return a + b\\n' > calc/__init__.py
        cat > tests/test_calc.py <<'EOF'
        import os, subprocess, sys
        import calc

        def test_add():
            assert calc.add(2, 3) == 5

        def test_tmp_path_runs_a_helper(tmp_path):
            helper = tmp_path / "helper.sh"
            helper.write_text("#!/bin/sh\\necho helper-ran\\n")
            helper.chmod(0o755)
            assert subprocess.run([str(helper)], capture_output=True, text=True).stdout == "helper-ran\\n"

        def test_subprocess_python():
            out = subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True)
            assert out.stdout == "42\\n"
        EOF
        {PY} -m pytest -q tests 2>&1 | grep -E '^[0-9]+ passed' | cut -d' ' -f1-2
        """)
    b, _ = both(world, "pytest", script)
    assert b.stdout == "3 passed\n", b.stdout


def test_multiprocessing_pool_lock_and_process_pool(world: World) -> None:
    program = textwrap.dedent("""\
        import concurrent.futures, multiprocessing, multiprocessing.shared_memory

        def square(x):
            return x * x

        if __name__ == "__main__":
            with multiprocessing.Pool(2) as pool:
                print(sum(pool.map(square, range(100))))
            lock = multiprocessing.Lock()
            with lock:
                print("locked")
            with concurrent.futures.ProcessPoolExecutor(2) as ex:
                print(list(ex.map(square, [1, 2, 3])))
            shm = multiprocessing.shared_memory.SharedMemory(create=True, size=16)
            shm.buf[0] = 7
            print(shm.buf[0])
            shm.close(); shm.unlink()
        """)
    (world.ws / "mp.py").write_text(program)
    b, _ = both(world, "multiprocessing", f'set -e; {PY} mp.py')
    assert b.stdout.splitlines() == ["328350", "locked", "[1, 4, 9]", "7"]


# --- node ------------------------------------------------------------------------------------------------
def test_npm_install_offline_from_a_local_tarball_then_npm_test(world: World) -> None:
    need("npm", "node")
    lib = world.ws / "leftpad-src"
    lib.mkdir()
    (lib / "package.json").write_text(json.dumps({"name": "leftpad-local", "version": "1.0.0", "main": "index.js"}))
    (lib / "index.js").write_text("module.exports = (s, n) => String(s).padStart(n, '0');\n")
    # what packages ship beside their code (two of the 95 packages of an eslint + typescript install carry
    # a .github/workflows): in node_modules they are the package's, not the project's settings, and are
    # written without asking anyone (policies/coding-agent.yaml, workspace-settings)
    for name, text in ((".github/workflows/ci.yml", "on: push\n"), (".vscode/settings.json", "{}\n"),
                       ("AGENTS.md", "Run the tests.\n")):
        (lib / name).parent.mkdir(parents=True, exist_ok=True)
        (lib / name).write_text(text)
    packed = subprocess.run(["npm", "pack", "--silent", str(lib)], cwd=world.ws, env=world.env,
                            capture_output=True, text=True, timeout=120, check=True).stdout.strip()
    tarball = world.ws / packed.splitlines()[-1]
    assert tarball.exists(), packed
    script = textwrap.dedent(f"""\
        set -e; cd "$1"
        cat > package.json <<'EOF'
        {{"name": "app", "version": "0.1.0", "private": true,
          "dependencies": {{"leftpad-local": "file:{tarball}"}},
          "scripts": {{"test": "node test.js"}}}}
        EOF
        printf 'const pad = require("leftpad-local");\\nif (pad(7, 3) !== "007") process.exit(1);\\nconsole.log("ok", pad(7, 3));\\n' > test.js
        npm install --offline --no-audit --no-fund --loglevel=error >/dev/null
        npm test --silent
        ls -A node_modules/leftpad-local
        """)
    # README, "refused on purpose": npm reads ~/.npmrc (registry tokens); the hidden file's read is recorded
    b, _ = both(world, "npm", script, on_purpose=("/.npmrc (credentials)",))
    assert b.stdout.splitlines() == ["ok 007", ".github", ".vscode", "AGENTS.md", "index.js", "package.json"], \
        b.stdout


# --- C ---------------------------------------------------------------------------------------------------
def test_make_and_gcc_of_a_small_c_project(world: World) -> None:
    need("make", "gcc")
    script = textwrap.dedent("""\
        set -e; cd "$1"
        cat > main.c <<'EOF'
        #include <stdio.h>
        #include "util.h"
        int main(void) { printf("%d\\n", twice(21)); return 0; }
        EOF
        printf 'int twice(int x);\\n' > util.h
        printf '#include "util.h"\\nint twice(int x) { return 2 * x; }\\n' > util.c
        printf 'app: main.o util.o\\n\\t$(CC) -o $@ $^\\n%%.o: %%.c util.h\\n\\t$(CC) -O1 -c $<\\n' > Makefile
        printf 'test: app\\n\\t./app\\nclean:\\n\\trm -f app *.o\\n.PHONY: test clean\\n' >> Makefile
        make -s test
        make -s clean && ls
        gcc -o /tmp/t-$$ main.c util.c && /tmp/t-$$
        gcc -c util.c && ar rcs libutil.a util.o
        gcc -o app2 main.c -L. -lutil && ./app2
        """)
    b, _ = both(world, "make", script)
    assert b.stdout.splitlines() == ["42", "Makefile", "main.c", "util.c", "util.h", "42", "42"], b.stdout


# --- rust ------------------------------------------------------------------------------------------------
def _rust_toolchain(world: World) -> None:
    """The engineer's rust as rustup lays it out in their home: ~/.cargo/bin/{cargo,rustc} -> rustup and
    ~/.rustup/toolchains/<default>. Hard links of this machine's own (no copy of a gigabyte); a machine
    whose toolchain our user cannot read (root's, when the suite runs as nobody) skips."""
    source = Path(os.environ.get("RUSTUP_HOME", str(Path.home() / ".rustup")))
    for cand in (source, Path("/root/.rustup")):
        with contextlib.suppress(OSError):  # another user's home: not even stat-able
            if (cand / "settings.toml").is_file() and os.access(cand / "toolchains", os.R_OK | os.X_OK):
                source = cand
                break
    else:
        print("\nSKIP: no rustup toolchain readable by this user (cargo may live under /root)")
        pytest.skip("no rustup toolchain readable by this user (cargo may live under /root)")
    settings = (source / "settings.toml").read_text()
    default = next((line.split("=", 1)[1].strip().strip('"') for line in settings.splitlines()
                    if line.startswith("default_toolchain")), "")
    rustup = source.parent / ".cargo" / "bin" / "rustup"
    if not default or not (source / "toolchains" / default).is_dir() or not rustup.is_file():
        pytest.skip(f"no default toolchain and rustup binary next to {source}")
    home = world.home
    (home / ".rustup" / "toolchains").mkdir(parents=True)
    (home / ".rustup" / "settings.toml").write_text(settings)
    try:
        subprocess.run(["cp", "-al", str(source / "toolchains" / default), str(home / ".rustup" / "toolchains")],
                       check=True, timeout=120, capture_output=True)
        (home / ".cargo" / "bin").mkdir(parents=True)
        os.link(rustup, home / ".cargo" / "bin" / "rustup")
    except (subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"cannot link the toolchain into the test home (another file system?): {exc}")
    for tool in ("cargo", "rustc"):
        (home / ".cargo" / "bin" / tool).symlink_to("rustup")
    world.env["PATH"] = f"{home / '.cargo' / 'bin'}:{SYSTEM_PATH}"


def test_cargo_new_build_test_offline(world: World) -> None:
    _rust_toolchain(world)
    script = textwrap.dedent("""\
        set -e; cd "$1"
        cargo new -q --vcs none hello
        cd hello
        printf 'pub fn twice(x: i32) -> i32 { 2 * x }\\n#[cfg(test)]\\nmod t { #[test] fn tw() { assert_eq!(super::twice(2), 4); } }\\n' > src/lib.rs
        cargo build -q --offline
        ./target/debug/hello
        cargo test -q --offline 2>&1 | grep -E '^test result' | head -1 | cut -d. -f1
        """)
    b, _ = both(world, "cargo", script)
    assert b.stdout.splitlines() == ["Hello, world!", "test result: ok"], b.stdout


# --- git -------------------------------------------------------------------------------------------------
def _upstream(world: World) -> Path:
    """A bare repository with CI workflows, editor settings and agent instructions, like most real ones,
    kept in the workspace (a mirror the agent may read)."""
    src = world.ws.parent / "upstream-src"
    src.mkdir()
    for rel, text in {".github/workflows/ci.yml": "on: push\njobs: {}\n", ".vscode/settings.json": "{}\n",
                      ".npmrc": "fund=false\n", "CLAUDE.md": "# notes\n", "main.txt": "one\n"}.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    world.real.git("init", "-q", cwd=src)
    world.real.git("add", "-A", cwd=src)
    world.real.git("commit", "-q", "-m", "upstream", cwd=src)
    bare_repo = world.ws / "mirrors" / "upstream.git"
    bare_repo.parent.mkdir()
    world.real.git("clone", "-q", "--bare", str(src), str(bare_repo), cwd=world.ws)
    lib = world.ws / "mirrors" / "lib.git"
    world.real.git("clone", "-q", "--bare", str(world.real.submodule_origin), str(lib), cwd=world.ws)
    return bare_repo


def test_git_clone_then_branch_rebase_stash_worktree_submodule_gc(world: World) -> None:
    upstream = _upstream(world)
    script = textwrap.dedent(f"""\
        set -e; cd "$1"
        git clone -q {upstream} clone
        cd clone
        ls -A .github/workflows .vscode
        git checkout -q -b topic
        echo topic > topic.txt && git add topic.txt && git commit -q -m topic
        git checkout -q main
        echo two >> main.txt && git commit -q -am two
        git checkout -q topic && git rebase -q main
        git log --format=%s | tr '\\n' ' '; echo
        echo wip >> main.txt && git stash -q && git stash pop -q && git diff --stat | tail -1
        git checkout -q -- main.txt
        git worktree add -q ../clone-wt -b wt
        git -C ../clone-wt status --short --branch | head -1
        git -c protocol.file.allow=always submodule add -q {upstream.parent / 'lib.git'} vendor/lib
        git commit -q -m lib
        git submodule status | cut -c43-
        git gc -q
        git fsck --connectivity-only --no-dangling --no-progress && git count-objects -v | grep -c '^packs: 1'
        """)
    b, _ = both(world, "git-clone", script)
    lines = b.stdout.splitlines()
    assert "ci.yml" in lines and "settings.json" in lines, lines
    assert "topic two upstream " in lines, lines


def test_git_in_the_existing_repository_branch_rebase_stash_worktree_gc(world: World) -> None:
    """The engineer's own repository (existed before the session): everyday work that changes no config."""
    script = textwrap.dedent("""\
        set -e; cd "$1"; W=$(basename "$1")
        git checkout -q -b "$W-base" main && echo y >> ../README.md && git commit -q -am "$W y"
        git checkout -q -b "$W" main
        echo x > x.txt && git add x.txt && git commit -q -m "$W x"
        git rebase -q "$W-base"
        git log -3 --format=%s | sed "s/$W/W/g" | tr '\\n' ' '; echo
        echo z >> ../README.md && git stash -q && git stash list | wc -l && git stash pop -q && git checkout -q -- ../README.md
        git worktree add -q "../$W-tree" -b "$W-tree" && git worktree list | grep -c "$W-tree"
        git worktree remove "../$W-tree"
        git submodule status | cut -c43-
        git gc -q && git fsck --connectivity-only --no-dangling --no-progress && echo fsck-ok
        git checkout -q main
        """)
    b, _ = both(world, "git-existing", script)
    assert b.stdout.splitlines()[0] == "W x W y vendor lib as a submodule ", b.stdout


# --- text tools ------------------------------------------------------------------------------------------
def test_grep_sed_rg_vim_jq(world: World) -> None:
    need("vim", "jq")
    rg = shutil.which("rg", path=SYSTEM_PATH)
    if rg is None:
        print("\nNOTE: rg is not installed; that step is left out")
    script = textwrap.dedent(f"""\
        set -e; cd "$1"
        printf 'alpha\\nbeta\\ngamma\\n' > words.txt
        printf '{{"name": "proj", "deps": {{"a": 1, "b": 2}}}}\\n' > data.json
        grep -rn beta . | sort
        sed -i 's/gamma/delta/' words.txt && cat words.txt | tr '\\n' ' '; echo
        {"rg -n alpha . | sort" if rg else "echo ./words.txt:1:alpha"}
        vim -es -N -c '%s/alpha/omega/' -c 'wq' words.txt && head -1 words.txt
        vim -es -N -c 'normal! Gofrom-vim' -c 'x' words.txt && tail -1 words.txt
        jq -r '.deps | to_entries | map(.key + "=" + (.value|tostring)) | join(",")' data.json
        jq '.name = "renamed"' data.json > data2.json && jq -r .name data2.json
        """)
    viminfo = world.home / ".viminfo"
    original = viminfo.read_text()
    after_bare: list[str] = []
    b, _ = both(world, "text-tools", script, after_bare=lambda: after_bare.append(viminfo.read_text()))
    assert b.stdout.splitlines()[-4:] == ["omega", "from-vim", "a=1,b=2", "renamed"], b.stdout
    # bare vim keeps its history in ~/.viminfo; under guard the engineer's file is neither read nor
    # written (not granted: vim finds no viminfo and saves none), and that costs no denial
    assert after_bare[0] != original, "bare vim did not write ~/.viminfo: the check below proves nothing"
    assert viminfo.read_text() == after_bare[0]


# --- archives --------------------------------------------------------------------------------------------
def _foreign_tarball(path: Path) -> None:
    """An archive whose files belong to another user (uid 1234), as every downloaded source tarball does."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data, mode in (("pkg/README", b"readme\n", 0o644), ("pkg/bin/run.sh", b"#!/bin/sh\necho ran\n", 0o755)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid, info.uname, info.gname = len(data), mode, 1234, 1234, "", ""
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("pkg/run")
        link.type, link.linkname, link.uid, link.gid = tarfile.SYMTYPE, "bin/run.sh", 1234, 1234
        tar.addfile(link)


def test_tar_x_of_an_archive_owned_by_another_user(world: World) -> None:
    need("tar")
    _foreign_tarball(world.ws / "pkg.tar.gz")
    script = textwrap.dedent("""\
        set -e; cd "$1"
        tar xzf ../pkg.tar.gz
        find pkg | sort
        stat -c '%A %n' pkg/README pkg/bin/run.sh
        ./pkg/run
        tar czf again.tgz pkg && tar tzf again.tgz | sort | tr '\\n' ' '; echo
        """)
    b, _ = both(world, "tar", script)
    assert "ran" in b.stdout.splitlines(), b.stdout
    owner = (world.ws / "tar-guard" / "pkg" / "README").stat().st_uid
    if os.geteuid() == 0:
        # README, "refused on purpose": as root, extracted files belong to the extractor, not to uid 1234
        assert (world.ws / "tar-bare" / "pkg" / "README").stat().st_uid == 1234
        assert owner == 0
    else:
        assert owner == os.geteuid()


# --- asks a human answers --------------------------------------------------------------------------------
@contextlib.contextmanager
def answering(world: World, verb: str) -> Iterator[list[dict[str, object]]]:
    """A human at another terminal: every pending ask is answered with `guard approve|deny ID` (the real
    CLI) until the block ends; yields the requests answered."""
    answered: list[dict[str, object]] = []
    stop = threading.Event()

    def human() -> None:
        while not stop.is_set():
            listed = subprocess.run([*GUARD, "approvals", "--json"], env=world.env, capture_output=True,
                                    text=True, timeout=60, check=False)
            for pending in json.loads(listed.stdout or '{"approvals": []}')["approvals"]:
                done = subprocess.run([*GUARD, verb, str(pending["approval"])], env=world.env,
                                      capture_output=True, text=True, timeout=60, check=False)
                if done.returncode == 0:
                    answered.append(pending)
            stop.wait(0.1)

    thread = threading.Thread(target=human, daemon=True)
    thread.start()
    try:
        yield answered
    finally:
        stop.set()
        thread.join(timeout=60)


def test_an_approved_change_to_the_existing_repositorys_config_happens(world: World) -> None:
    """`.git/config` of the engineer's repository asks (it can run code at the next git command). git
    writes `.git/config.lock` and renames it over `.git/config`: once a human approves, the change must
    be made, not recorded as approved and then fail on a read-only mount (EBUSY/EROFS)."""
    lib = world.ws / "mirrors" / "lib2.git"
    world.real.git("clone", "-q", "--bare", str(world.real.submodule_origin), str(lib))
    (world.ws / ".vscode").mkdir()
    (world.ws / ".vscode" / "settings.json").write_text('{"editor.tabSize": 2}\n')
    script = (f'set -e; git config core.editor vi-approved && git config --get core.editor && '
              f'git -c protocol.file.allow=always submodule add -q {lib} vendor/lib2 && '
              f'git config --get submodule.vendor/lib2.url && '
              # an in-place write (editors, `>>`), not git's lock and rename: the open itself must work
              f'printf "[approved]\\n\\tinplace = yes\\n" >> .git/config && git config --get approved.inplace && '
              # an existing settings directory (read-only at the kernel tier): a new file, and sed's temp+rename
              f"echo '{{}}' > .vscode/tasks.json && sed -i 's/2/4/' .vscode/settings.json && cat .vscode/settings.json")
    with answering(world, "approve") as answered:
        g = guarded(world, script, world.ws)
    assert g.returncode == 0, g.stderr[-3000:]
    assert g.stdout.splitlines() == ["vi-approved", str(lib), "yes", '{"editor.tabSize": 4}'], g.stdout
    assert g.denied == 0, _denials(world, g.session)
    targets = [str((p.get("action") or {}).get("target", "")) for p in answered]  # type: ignore[union-attr]
    assert str(world.ws / ".git" / "config") in targets, answered
    config = (world.ws / ".git" / "config").read_text()
    assert "vi-approved" in config and "lib2" in config and "inplace = yes" in config, config
    assert "vendor/lib2" in (world.ws / ".gitmodules").read_text()
    assert (world.ws / ".vscode" / "tasks.json").read_text() == "{}\n"


def test_a_denied_change_to_the_existing_repositorys_config_is_refused_and_changes_nothing(world: World) -> None:
    before = (world.ws / ".git" / "config").read_bytes()
    with answering(world, "deny") as answered:
        g = guarded(world, "git config core.editor vi-denied", world.ws)
    assert g.returncode != 0, g.stderr[-2000:]
    assert answered, "the change asked a human"
    assert g.denied >= 1
    assert any(".git/config" in d and "workspace-git-config" in d for d in _denials(world, g.session)), (
        _denials(world, g.session))
    assert (world.ws / ".git" / "config").read_bytes() == before
