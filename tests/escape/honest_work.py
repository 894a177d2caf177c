"""The reverse of the attacks: ordinary work an agent does must not be denied under coding-agent.

Each run must exit 0 with no denial in its summary, and produce what the same command produces bare.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.timeout(120)


def _ok(run) -> None:
    assert run.returncode == 0, run
    assert run.summary is not None and run.summary["denied"] == 0, run


def test_git_init_add_commit_reads_gitconfig(world):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    run = world.guard_run(world.sh(
        "mkdir -p proj && cd proj && git init -q . && echo hello > README && git add README && "
        "git commit -q -m first && git log --format='%an <%ae> %s'"))
    _ok(run)
    assert "Eng <eng@example.invalid> first" in run.stdout, run


def test_python_imports(world):
    run = world.guard_run(world.py(
        "import json, sqlite3, ssl, hashlib, tempfile\n"
        "db = sqlite3.connect('honest.db'); db.execute('create table t (x)'); db.commit()\n"
        "with tempfile.NamedTemporaryFile() as f: f.write(b'x')\n"
        "print('IMPORTS-OK', ssl.OPENSSL_VERSION.split()[0], json.dumps([1]))\n"))
    _ok(run)
    assert "IMPORTS-OK" in run.stdout and (world.ws / "honest.db").exists(), run


def test_node_imports(world):
    if shutil.which("node", path="/usr/local/bin:/usr/bin:/bin") is None:
        pytest.skip("node is not installed")
    run = world.guard_run(["node", "-e", "const c = require('crypto'); require('fs').writeFileSync('n.txt', "
                                         "c.randomBytes(4).toString('hex')); console.log('NODE-OK')"])
    _ok(run)
    assert "NODE-OK" in run.stdout and (world.ws / "n.txt").exists(), run


def test_gcc_compiles_and_runs_hello(world):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    (world.ws / "hello.c").write_text('#include <stdio.h>\nint main(void){puts("HELLO-C");return 0;}\n')
    run = world.guard_run(world.sh("gcc -O1 -o hello hello.c && ./hello"))
    _ok(run)
    assert "HELLO-C" in run.stdout, run


def test_pip_reads_its_cache(world):
    (world.home / ".cache" / "pip" / "selfcheck").mkdir(parents=True, exist_ok=True)
    bare = world.bare_run(["python3", "-m", "pip", "--version"])
    if bare.returncode != 0:
        pytest.skip(f"pip is not installed for the system python: {bare.stderr.strip()}")
    run = world.guard_run(world.sh("python3 -m pip --version && python3 -m pip list --disable-pip-version-check"))
    _ok(run)
    assert "pip " in run.stdout, run


def test_read_gitconfig_and_tar(world):
    run = world.guard_run(world.sh(f'cat "{world.home}/.gitconfig" && mkdir -p t && echo a > t/a && '
                                   'tar czf t.tgz t && tar tzf t.tgz'))
    _ok(run)
    assert "name = Eng" in run.stdout and "t/a" in run.stdout, run


def test_o_tmpfile_in_workspace(world):
    """O_TMPFILE (an unnamed file, then linked into place) is how careful tools write atomically."""
    run = world.guard_run(world.py(
        "import os\nfd = os.open('.', os.O_TMPFILE | os.O_WRONLY, 0o644)\nos.write(fd, b'x')\nprint('TMPFILE-OK')\n"))
    _ok(run)
    assert "TMPFILE-OK" in run.stdout, run


def test_zz_trail_verifies(world):
    world.check_trail()


def test_agent_state_folders_missing_at_launch_are_created(world):
    """A fresh machine: no ~/.claude, ~/.gemini, ~/.codex, ~/.aider, ~/.cursor yet. Each agent creates its
    state folder on its first run; guard creates the granted ones at launch (mode 0700) so that works."""
    names = (".claude", ".gemini", ".codex", ".aider", ".cursor")
    fresh = world.root / "fresh-home"
    fresh.mkdir()
    env = {"HOME": str(fresh)}
    # os.makedirs, not `mkdir -p`: mkdir(2) of the existing HOME answering EEXIST is the supervisor's part
    run = world.guard_run(world.py(
        "import os\n"
        f"for n in {names!r}:\n"
        "    os.makedirs(os.path.join(os.environ['HOME'], n, 'sub'), exist_ok=True)\n"
        "    open(os.path.join(os.environ['HOME'], n, 'sub', 's.json'), 'w').write('state\\n')\n"
        "print('STATE-OK')\n"), env=env)
    _ok(run)
    assert "STATE-OK" in run.stdout, run
    assert "created missing agent-state folders" in run.stderr, run
    for name in names:
        assert (fresh / name / "sub" / "s.json").read_text() == "state\n"
        assert (fresh / name).stat().st_mode & 0o777 == 0o700
    assert not (fresh / "go").exists() and not (fresh / ".m2").exists()  # only one level, only state
    again = world.guard_run(world.sh("true"), env=env)
    assert "created missing agent-state folders" not in again.stderr, again


def test_bash_reads_its_startup_files_quietly(world):
    """An agent's Bash tool sources ~/.bashrc: it must not print "Permission denied" at every command."""
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    run = world.guard_run(["bash", "-i", "-c", "echo BASH-OK $EDITOR"], input="")
    assert run.returncode == 0, run
    assert "BASH-OK vi" in run.stdout, run  # ~/.bashrc exports EDITOR=vi
    assert "Permission denied" not in run.stderr, run
    run = world.guard_run(["bash", "-l", "-c", "echo LOGIN-OK"])
    _ok(run)
    assert "Permission denied" not in run.stderr, run


def test_multiprocessing_pool_executor_lock_and_shared_memory(world):
    """Semaphores and shared memory of the session's own processes live in its private /dev/shm."""
    work = world.py(
        "import multiprocessing as mp, concurrent.futures as cf\n"
        "from multiprocessing import shared_memory\n"
        "if __name__ == '__main__':\n"
        "    with mp.Pool(2) as p: a = p.map(abs, [-1, -2, -3])\n"
        "    with cf.ProcessPoolExecutor(2) as ex: b = list(ex.map(abs, [-4, -5]))\n"
        "    lock = mp.Lock(); lock.acquire(); lock.release()\n"
        "    shm = shared_memory.SharedMemory(create=True, size=16); shm.buf[0] = 42; v = shm.buf[0]\n"
        "    shm.close(); shm.unlink()\n"
        "    print('MP-OK', a, b, v)\n")
    bare = world.bare_run(work)
    assert "MP-OK [1, 2, 3] [4, 5] 42" in bare.stdout, bare
    run = world.guard_run(work)
    _ok(run)
    assert run.stdout == bare.stdout, run


def test_build_in_tmp_and_run_it(world):
    """`gcc -o /tmp/x t.c && /tmp/x`, and a helper written to a fresh temporary directory and executed
    (what pytest's tmp_path tests do): the session's /tmp runs what the session builds there."""
    script = ('d=$(mktemp -d) && printf "#!/bin/sh\\necho HELPER-RAN\\n" > "$d/helper" && chmod +x "$d/helper" '
              '&& "$d/helper"')
    if shutil.which("gcc") is not None:
        script += (' && printf "int main(void){return 7;}\\n" > /tmp/t.c && gcc -o /tmp/x /tmp/t.c; '
                   '/tmp/x; echo "C-RC=$?"')
    bare = world.bare_run(world.sh(script))
    assert "HELPER-RAN" in bare.stdout, bare
    run = world.guard_run(world.sh(script))
    _ok(run)
    assert run.stdout == bare.stdout, run


def test_git_status_under_review_readonly_is_not_a_denial(world):
    """git status refreshes the index opportunistically (.git/index.lock): a cache, not a change."""
    (world.ws / "app.py").touch()  # a stat change git would want to refresh
    run = world.guard_run(["git", "status", "--short"], policy="review-readonly")
    _ok(run)


def test_tar_x_of_an_archive_owned_by_another_user(world):
    """As root, tar restores owners by default; the sandbox has no CAP_CHOWN, so it extracts as an
    ordinary user does (files owned by the extractor). As nobody, it never tried."""
    src = world.root / "tar-src"
    (src / "pkg").mkdir(parents=True, exist_ok=True)
    (src / "pkg" / "data.txt").write_text("TAR-DATA\n")
    if os.geteuid() == 0:
        for p in (src / "pkg", src / "pkg" / "data.txt"):
            os.chown(p, 1234, 1234)
    archive = world.ws / "owned.tar"
    subprocess.run(["tar", "cf", str(archive), "-C", str(src), "pkg"], check=True, timeout=60)
    script = 'rm -rf "out-$T" && mkdir "out-$T" && tar xf owned.tar -C "out-$T" && cat "out-$T/pkg/data.txt"'
    bare = world.bare_run(world.sh(script), env={"T": "bare"})
    assert "TAR-DATA" in bare.stdout, bare
    run = world.guard_run(world.sh(script), env={"T": "guarded"})
    _ok(run)
    assert "TAR-DATA" in run.stdout, run


def test_other_users_files_show_their_owner(world):
    """As root every id is mapped: `ls -n` shows a file's real owner, not the overflow id 65534."""
    if os.geteuid() != 0:
        pytest.skip("only root can own a file as another user")
    f = world.ws / "owned-by-1234.txt"
    f.write_text("x\n")
    os.chown(f, 1234, 1234)
    run = world.guard_run(world.py(f"import os; print('OWNER', os.stat({str(f)!r}).st_uid)"))
    _ok(run)
    assert "OWNER 1234" in run.stdout, run


def test_refused_looks_refused_not_missing(world):
    """Outside the grants a path answers "Permission denied" (refused), and a path that does not exist
    "No such file", also where the home is carved (under /tmp, as here and in CI): an ungranted file or
    directory listing is refused; a name beneath an ungranted directory is absent (the placeholder is
    search-only so that a write there still reaches the recorded decision)."""
    mirror = world.home / "git-mirrors" / "x.git"
    mirror.mkdir(parents=True, exist_ok=True)
    (mirror / "HEAD").write_text("ref: refs/heads/main\n")
    (world.home / "notes.txt").write_text("private notes\n")
    sibling = world.home / "src" / "other-project"
    sibling.mkdir(parents=True, exist_ok=True)
    probe = world.py(
        "import os\n"
        "for p in [os.path.expanduser('~/git-mirrors'), os.path.expanduser('~/notes.txt'), "
        "'../other-project', os.path.expanduser('~/.ssh'), os.path.expanduser('~'), "
        "os.path.expanduser('~/no-such-thing'), '../no-such-project']:\n"
        "    try:\n"
        "        open(p).read() if not os.path.isdir(p) else os.listdir(p)\n"
        "        print(p, 'OPEN')\n"
        "    except OSError as exc:\n"
        "        print(p, type(exc).__name__)\n")
    assert "OPEN" in world.bare_run(probe).stdout
    run = world.guard_run(probe)
    assert run.returncode == 0, run
    lines = dict(line.rsplit(" ", 1) for line in run.stdout.splitlines())
    for refused in (str(world.home / "git-mirrors"), str(world.home / "notes.txt"), "../other-project",
                    str(world.home / ".ssh"), str(world.home)):
        assert lines[refused] == "PermissionError", (refused, run)
    assert lines[str(world.home / "no-such-thing")] == "FileNotFoundError", run
    assert lines["../no-such-project"] == "FileNotFoundError", run
