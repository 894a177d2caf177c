"""The supervisor's compiled fast path (guard/_core.c, guard/sandbox/fastpath.py), attacked.

Once the first write in a directory has gone through the Python supervisor, the engine may prove that
every plain name in it gets the same answer, and the core then answers further write-opens and
timestamp changes there itself, outside the sandbox and without Landlock: a bug in it would write
wherever the supervisor can. So each attack first warms a directory (a plain write), then aims at what
the core must hand back or refuse: names a rule speaks of, a planted hard link, a symlink swapped in
under a name the core already took, set-id modes. Each works bare; under guard it fails. The honest
half checks fidelity (umask, O_EXCL, O_TRUNC, O_APPEND, O_NONBLOCK, times) and that every open the
core answered is in the trail with its target and pid.
"""

from __future__ import annotations

import ast
import os
import resource
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(240)

WARM = "import os, sys; d = sys.argv[1]; os.makedirs(d, exist_ok=True); open(os.path.join(d, 'warm'), 'w').close()\n"


def _py(world, body: str, *args: str) -> list[str]:
    return ["/usr/bin/python3", "-I", "-c", WARM + body, *args]


def test_a_name_a_rule_speaks_of_is_not_taken_in_a_warm_directory(world):
    """`.npmrc` in a directory the core already answers for is an ask (workspace-settings), never the
    directory's allow."""
    warm = world.ws / "fast-spoken"
    body = ("for i in range(50): open(os.path.join(d, f'f{i}'), 'w').close()\n"
            "open(os.path.join(d, '.npmrc'), 'w').write('registry=http://evil.invalid/\\n'); print('WROTE')")
    bare_dir = world.scratch / "fast-spoken-bare"
    bare = world.bare_run(_py(world, body, str(bare_dir)))
    assert "WROTE" in bare.stdout and (bare_dir / ".npmrc").exists(), bare
    run = world.guard_run(_py(world, body, str(warm)), policy=world.fast_ask)
    assert "WROTE" not in run.stdout and not (warm / ".npmrc").exists(), run
    assert (warm / "f49").exists(), run  # the plain names went through
    world.assert_denied(run, "write", warm / ".npmrc")


def test_a_hard_link_planted_in_a_warm_directory_is_not_written(world):
    secret = world.outside / "fast-linked.txt"
    secret.write_text("the engineer's file\n")
    warm = world.ws / "fast-linked"
    warm.mkdir()
    os.link(secret, warm / "notes.txt")
    body = ("for i in range(20): open(os.path.join(d, f'f{i}'), 'w').close()\n"
            "open(os.path.join(d, 'notes.txt'), 'a').write('PWNED\\n'); print('WROTE')")
    bare_secret = world.scratch / "fast-linked-bare.txt"
    bare_secret.write_text("x\n")
    bare_dir = world.scratch / "fast-linked-dir"
    bare_dir.mkdir()
    os.link(bare_secret, bare_dir / "notes.txt")
    bare = world.bare_run(_py(world, body, str(bare_dir)))
    assert "PWNED" in bare_secret.read_text(), bare
    run = world.guard_run(_py(world, body, str(warm)))
    assert "PWNED" not in secret.read_text(), run
    assert "WROTE" not in run.stdout, run


# The swapper is a forked process, not a thread: a thread shares the interpreter lock with the attack
# loop and under load may barely run, so a bare run would show nothing. Its progress is counted in a
# shared page, and the attack runs until the swapper has swapped often enough (bounded) or, given a
# patience of 0, until the attack has visibly reached its target (the bare run's proof).
RACE = """
import mmap, signal, struct
target = sys.argv[2]
patience = int(sys.argv[3])
for i in range(20): open(os.path.join(d, f'f{i}'), 'w').close()
shared = mmap.mmap(-1, 8)
def swaps():
    return struct.unpack_from('Q', shared)[0]
def swapper(name):
    link = name + '.l'; plain = name + '.p'
    n = 0
    while True:
        try:
            os.symlink(target, link); os.replace(link, name)
            open(plain, 'w').close(); os.replace(plain, name)
            n += 1; struct.pack_into('Q', shared, 0, n)
        except OSError:
            pass
def race(name, attempt, reached):
    pid = os.fork()
    if pid == 0:
        try:
            swapper(name)
        finally:
            os._exit(0)
    tries = 0
    try:
        while tries < 2_000_000:
            tries += 1
            attempt()
            if patience == 0:
                if tries % 64 == 0 and reached():
                    break
            elif tries >= patience and swaps() >= 300:
                break
    finally:
        os.kill(pid, signal.SIGKILL); os.waitpid(pid, 0)
    return tries
"""

SWAP = RACE + """
t = os.path.join(d, 't')
hits = 0
def attempt():
    global hits
    try:
        with open(t, 'a') as fh:
            fh.write('PWNED\\n')
            hits += 1
    except OSError:
        pass
def reached():
    try:
        with open(target) as fh:
            return 'PWNED' in fh.read()
    except OSError:
        return False
race(t, attempt, reached)
print('OPENS', hits)
"""


def test_a_symlink_swapped_in_under_a_name_the_core_takes_is_never_followed(world):
    """The core checks what is at the name, records, then opens it itself with O_NOFOLLOW from the held
    directory: a symlink raced in between is refused (ELOOP), never followed out of the workspace."""
    victim = world.outside / "fast-swap-victim"
    victim.write_text("clean\n")
    bare_victim = world.scratch / "fast-swap-bare-victim"
    bare_victim.write_text("clean\n")
    bare = world.bare_run(_py(world, SWAP, str(world.scratch / "fast-swap-bare"), str(bare_victim), "0"),
                          timeout=120)
    assert "PWNED" in bare_victim.read_text(), bare
    run = world.guard_run(_py(world, SWAP, str(world.ws / "fast-swap"), str(victim), "3000"), timeout=180)
    assert "OPENS" in run.stdout, run
    assert victim.read_text() == "clean\n", run


def test_a_set_id_mode_is_dropped_by_the_core_too(world):
    body = ("for i in range(20): open(os.path.join(d, f'f{i}'), 'w').close()\n"
            "fd = os.open(os.path.join(d, 'tool'), os.O_CREAT | os.O_WRONLY, 0o6755); os.close(fd)\n"
            "print('MODE', oct(os.stat(os.path.join(d, 'tool')).st_mode & 0o7777))")
    bare_dir = world.scratch / "fast-setid"
    bare = world.bare_run(_py(world, body, str(bare_dir)))
    assert stat.S_IMODE((bare_dir / "tool").stat().st_mode) & (stat.S_ISUID | stat.S_ISGID), bare
    run = world.guard_run(_py(world, body, str(world.ws / "fast-setid")))
    mode = stat.S_IMODE((world.ws / "fast-setid" / "tool").stat().st_mode)
    assert mode and not mode & (stat.S_ISUID | stat.S_ISGID), (oct(mode), run)


FIDELITY = """
import fcntl
os.umask(0o077)
p = lambda n: os.path.join(d, n)
for i in range(30): open(p(f'f{i}'), 'w').close()
out = []
fd = os.open(p('private'), os.O_CREAT | os.O_WRONLY, 0o666); os.close(fd)
out.append('mode=' + oct(os.stat(p('private')).st_mode & 0o777))
try:
    os.open(p('private'), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    out.append('excl=opened')
except FileExistsError:
    out.append('excl=EEXIST')
open(p('t'), 'w').write('0123456789')
fd = os.open(p('t'), os.O_WRONLY | os.O_TRUNC); os.close(fd)
out.append('trunc=' + str(os.path.getsize(p('t'))))
open(p('t'), 'a').write('ab'); open(p('t'), 'a').write('cd')
out.append('append=' + open(p('t')).read())
fd = os.open(p('t'), os.O_WRONLY)
out.append('nonblock=' + str(bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK)))
os.close(fd)
os.utime(p('t'), (1_000_000_000, 1_200_000_000))
out.append('mtime=' + str(int(os.stat(p('t')).st_mtime)))
try:
    os.unlink(p('never-there'))  # the kernel's ENOENT, before any decision: nothing recorded
    out.append('unlink=done')
except FileNotFoundError:
    out.append('unlink=ENOENT')
os.link(p('t'), p('t.hard'))  # git links each loose object from its temporary name
out.append('link=' + str(os.stat(p('t')).st_nlink) + open(p('t.hard')).read())
try:
    os.link(p('t'), p('t.hard'))
    out.append('relink=done')
except FileExistsError:
    out.append('relink=EEXIST')
try:
    os.mkdir(p('t'))  # the kernel's EEXIST, before any decision: nothing recorded (pip's exist_ok)
    out.append('mkdir=done')
except FileExistsError:
    out.append('mkdir=EEXIST')
os.mkdir(p('sub')); open(p('sub/inside'), 'w').close()
for what, act in (('rmdir-full', lambda: os.rmdir(p('sub'))),  # ENOTEMPTY before any decision
                  ('rmdir-absent', lambda: os.rmdir(p('no-such'))),  # ENOENT, likewise
                  ('symlink-taken', lambda: os.symlink('t', p('t.hard')))):  # EEXIST, likewise
    try:
        act(); out.append(what + '=done')
    except OSError as exc:
        out.append(what + '=' + type(exc).__name__)
os.symlink('t', p('t.sym')); out.append('symlink=' + os.readlink(p('t.sym')))
os.unlink(p('sub/inside')); os.rmdir(p('sub')); out.append('rmdir=' + str(os.path.exists(p('sub'))))
print(' '.join(out))
"""


def test_the_core_answers_as_the_kernel_would_and_records_every_open(world):
    bare_dir = world.scratch / "fast-fidelity"
    bare = world.bare_run(_py(world, FIDELITY, str(bare_dir)))
    assert bare.returncode == 0, bare
    warm = world.ws / "fast-fidelity"
    run = world.guard_run(_py(world, FIDELITY, str(warm)))
    assert run.returncode == 0, run
    assert run.stdout == bare.stdout, (run.stdout, bare.stdout)
    assert "mode=0o600" in run.stdout and "excl=EEXIST" in run.stdout
    writes = [r for r in world.records(run.session) if r.get("type") == "decision"
              and r["action"]["op"] == "write" and r["action"]["target"].startswith(str(warm) + "/")]
    targets = [r["action"]["target"] for r in writes]
    for i in range(30):
        assert str(warm / f"f{i}") in targets, f"f{i} has no record: {targets}"
    assert all(r["decision"]["verdict"] == "allow" and isinstance(r["action"].get("pid"), int) for r in writes)
    # warm, f0..f29, private, t (create), t (trunc), t (append) x2, t (O_WRONLY), t (utime), t + t.hard (link),
    # sub (mkdir), sub/inside (create), t.sym (symlink), sub/inside (unlink), sub (rmdir)
    assert len(writes) == 1 + 30 + 1 + 6 + 2 + 5, targets
    assert targets[-7:] == [str(warm / n) for n in ("t", "t.hard", "sub", "sub/inside", "t.sym", "sub/inside",
                                                     "sub")], targets
    world.check_trail()


NAMES_ATTACK = """
for i in range(30): open(os.path.join(d, f'f{i}'), 'w').close()
os.mkdir(os.path.join(d, 'sub')); open(os.path.join(d, 'sub', 'x'), 'w').close()
out = []
open(os.path.join(d, 'evil'), 'w').write('registry=http://evil.invalid/\\n')
for label, act in [
    ('rename-onto-spoken', lambda: os.rename(os.path.join(d, 'evil'), os.path.join(d, '.npmrc'))),
    ('rename-into-hooks', lambda: os.rename(os.path.join(d, 'f1'), sys.argv[2])),
    ('mkdir-spoken', lambda: os.mkdir(os.path.join(d, '.vscode'))),
    ('unlink-spoken', lambda: os.unlink(os.path.join(d, 'sub', '..', '.env.keep'))),
]:
    try:
        act()
        out.append(label + '=done')
    except OSError as exc:
        out.append(label + '=' + type(exc).__name__)
print(' '.join(out))
"""


def test_names_a_rule_speaks_of_are_not_renamed_made_or_removed_by_the_core(world):
    """rename onto `.npmrc`, rename into .git/hooks, mkdir `.vscode`, unlink through `..` of a protected
    file: in a warm directory each goes to Python, which asks or refuses; bare, each is done."""
    bare_dir = world.scratch / "fast-names-bare"
    bare_dir.mkdir()
    (bare_dir / ".env.keep").write_text("keep\n")
    bare_hooks = world.scratch / "fast-names-bare-hooks"
    bare_hooks.mkdir()
    bare = world.bare_run(_py(world, NAMES_ATTACK, str(bare_dir), str(bare_hooks / "pre-commit")))
    assert bare.stdout.split() == ["rename-onto-spoken=done", "rename-into-hooks=done", "mkdir-spoken=done",
                                   "unlink-spoken=done"], bare
    warm = world.ws / "fast-names"
    warm.mkdir()
    (warm / ".env.keep").write_text("keep\n")
    hook = world.ws / ".git" / "hooks" / "pre-commit-fast"
    run = world.guard_run(_py(world, NAMES_ATTACK, str(warm), str(hook)), policy=world.fast_ask)
    assert "=done" not in run.stdout, run
    assert not (warm / ".npmrc").exists() and not hook.exists() and not (warm / ".vscode").exists(), run
    assert (warm / "evil").exists() and (warm / "f1").exists(), run


NAMES_HONEST = """
os.umask(0o027)
p = lambda *n: os.path.join(d, *n)
for i in range(30): open(p(f'f{i}'), 'w').close()
out = []
os.mkdir(p('m'), 0o777); out.append('mkdir=' + oct(os.stat(p('m')).st_mode & 0o7777))
try:
    os.mkdir(p('m'))
except FileExistsError:
    out.append('again=EEXIST')
open(p('a'), 'w').write('A'); open(p('b'), 'w').write('B')
os.rename(p('a'), p('b')); out.append('replace=' + open(p('b')).read() + str(os.path.exists(p('a'))))
open(p('c'), 'w').write('C')
os.rename(p('c'), p('m', 'c')); out.append('moved=' + open(p('m', 'c')).read())
os.unlink(p('b')); out.append('unlinked=' + str(os.path.exists(p('b'))))
try:
    os.unlink(p('b'))
except FileNotFoundError:
    out.append('again=ENOENT')
print(' '.join(out))
"""


def test_the_cores_names_are_the_kernels_and_each_is_recorded(world):
    bare_dir = world.scratch / "fast-names-honest"
    bare = world.bare_run(_py(world, NAMES_HONEST, str(bare_dir)))
    assert bare.returncode == 0, bare
    warm = world.ws / "fast-names-honest"
    run = world.guard_run(_py(world, NAMES_HONEST, str(warm)))
    assert run.returncode == 0 and run.stdout == bare.stdout, (run, bare.stdout)
    targets = [r["action"]["target"] for r in world.records(run.session) if r.get("type") == "decision"
               and r["action"]["op"] == "write" and r["decision"]["verdict"] == "allow"]
    for name in ("m", "a", "b", "c", "m/c"):
        assert str(warm / name) in targets, (name, targets)
    # rename a->b and c->m/c: both names of each recorded
    assert targets.count(str(warm / "a")) == 2 and targets.count(str(warm / "c")) == 2, targets


ATTRS_HONEST = """
p = lambda *n: os.path.join(d, *n)
for i in range(30): open(p(f'f{i}'), 'w').close()
out = []
os.chmod(p('f1'), 0o640); out.append('chmod=' + oct(os.stat(p('f1')).st_mode & 0o7777))
fd = os.open(p('f2'), os.O_WRONLY); os.fchmod(fd, 0o600)
os.utime(fd, (1_000_000_000, 1_100_000_000)); os.close(fd)
out.append('fchmod=' + oct(os.stat(p('f2')).st_mode & 0o7777) + ' futimes=' + str(int(os.stat(p('f2')).st_mtime)))
os.mkdir(p('sub')); open(p('sub', 'x'), 'w').close()
os.chmod(p('sub'), 0o2750); out.append('dir=' + oct(os.stat(p('sub')).st_mode & 0o7777))
os.utime(p('sub'), (1_000_000_000, 1_200_000_000)); out.append('dirtime=' + str(int(os.stat(p('sub')).st_mtime)))
if os.geteuid() == 0:
    os.chown(p('f3'), 0, 0); fd = os.open(p('f4'), os.O_WRONLY); os.fchown(fd, 0, 0); os.close(fd)
    out.append('chown=' + str(os.stat(p('f3')).st_uid) + str(os.stat(p('f4')).st_uid))
for label, act in [('chmod-setuid', lambda: os.chmod(p('f5'), 0o4755)),
                   ('fchmod-setgid', lambda: os.fchmod(os.open(p('f6'), os.O_WRONLY), 0o2755))]:
    try:
        act(); out.append(label + '=done')
    except PermissionError:
        out.append(label + '=EPERM')
print(' '.join(out))
"""


def test_attribute_changes_in_a_warm_directory_are_the_kernels_and_set_id_is_refused(world):
    bare = world.bare_run(_py(world, ATTRS_HONEST, str(world.scratch / "fast-attrs")))
    assert bare.returncode == 0 and "chmod-setuid=done" in bare.stdout, bare
    run = world.guard_run(_py(world, ATTRS_HONEST, str(world.ws / "fast-attrs")))
    assert run.returncode == 0, run
    expected = bare.stdout.replace("chmod-setuid=done", "chmod-setuid=EPERM").replace(
        "fchmod-setgid=done", "fchmod-setgid=EPERM")
    assert run.stdout == expected, (run.stdout, expected)


CHMOD_SWAP = RACE + """
link = os.path.join(d, 'link')
def attempt():
    try:
        os.chmod(link, 0o777)
    except OSError:
        pass
def reached():
    try:
        return os.stat(target).st_mode & 0o777 == 0o777
    except OSError:
        return False
race(link, attempt, reached)
print('DONE')
"""


def test_a_symlink_raced_in_under_a_chmod_never_reaches_the_file_it_points_at(world):
    victim = world.outside / "fast-chmod-victim"
    victim.write_text("x\n")
    victim.chmod(0o600)
    bare_victim = world.scratch / "fast-chmod-bare-victim"
    bare_victim.write_text("x\n")
    bare_victim.chmod(0o600)
    bare = world.bare_run(_py(world, CHMOD_SWAP, str(world.scratch / "fast-chmod-bare"), str(bare_victim), "0"),
                          timeout=120)
    assert stat.S_IMODE(bare_victim.stat().st_mode) == 0o777, bare
    run = world.guard_run(_py(world, CHMOD_SWAP, str(world.ws / "fast-chmod"), str(victim), "3000"), timeout=180)
    assert "DONE" in run.stdout, run
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600, run


UMASKS = """
import threading
p = lambda n: os.path.join(d, n)
for i in range(30): open(p(f'f{i}'), 'w').close()
out = []
def make(tag):
    fd = os.open(p(tag), os.O_CREAT | os.O_WRONLY, 0o777); os.close(fd)
    os.mkdir(p(tag + '.d'), 0o777)
    return oct(os.stat(p(tag)).st_mode & 0o777) + '/' + oct(os.stat(p(tag + '.d')).st_mode & 0o777)
for i, m in enumerate((0o022, 0o077, 0o002, 0o027, 0o000, 0o077)):
    os.umask(m)
    out.append(make(f'main{i}a')); out.append(make(f'main{i}b'))  # the second create may use a kept umask
for i, m in enumerate((0o007, 0o070)):  # a thread shares the umask with the main thread
    t = threading.Thread(target=os.umask, args=(m,)); t.start(); t.join()
    out.append(make(f'thread{i}'))
for i, m in enumerate((0o066, 0o011)):  # a child's umask is its own; the parent's stays as it was
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.umask(m)
        os.write(w, (make(f'child{i}a') + ',' + make(f'child{i}b')).encode()); os._exit(0)
    os.close(w); out.append(os.read(r, 200).decode()); os.close(r); os.waitpid(pid, 0)
    out.append(make(f'parent{i}'))
print(' '.join(out))
"""


def test_the_umask_a_create_applies_is_the_tasks_own_after_every_change(world):
    """The core keeps each task's umask instead of reading it for every create; any umask(2) call makes it
    forget. Modes of files and directories after changes in the main thread, in another thread (threads
    share it) and in forked children (theirs alone) are exactly the bare ones."""
    bare = world.bare_run(_py(world, UMASKS, str(world.scratch / "fast-umask")))
    assert bare.returncode == 0, bare
    run = world.guard_run(_py(world, UMASKS, str(world.ws / "fast-umask")))
    assert run.returncode == 0, run
    assert run.stdout == bare.stdout, (run.stdout, bare.stdout)
    assert "0o700/0o700" in run.stdout and "0o711/0o711" in run.stdout


DEPTH_POLICY = """version: 1
name: depths
extends: [coding-agent]
rules:
  - id: two-deep
    deny: [write]
    paths: ["${workspace}/fast-depth/src/*/*"]
  - id: four-deep
    deny: [write]
    paths: ["${workspace}/fast-depth/build/*/*/*/*"]
"""

# One program for both depth tests: warm each top directory (Python judges it and enters it), reach the
# chain's last directory (`make` it, by the core: a plain name in an entered directory; or find it there),
# then write in it.
DEPTHS_PROGRAM = """
out = []
make = sys.argv[2] == 'make'
for top, chain in (('src', ['a']), ('build', ['a', 'b', 'c']), ('free', ['a', 'b', 'c', 'e'])):
    base = os.path.join(d, top)
    os.makedirs(base, exist_ok=True)
    open(os.path.join(base, 'warm'), 'w').close()
    here = base
    for name in chain:
        here = os.path.join(here, name)
        if make:
            os.mkdir(here)
    try:
        open(os.path.join(here, 'x'), 'w').close()
        out.append(top + '=written')
    except PermissionError:
        out.append(top + '=EACCES')
print(' '.join(out))
"""


@pytest.mark.parametrize("how", ["make", "existing"])
def test_a_directory_below_an_entered_one_keeps_the_answer_only_as_deep_as_the_engine_proved(world, how):
    """The core enters a directory it makes itself, or an existing one it meets on its first write, with the
    entry of the entered directory above it, as many levels down as the engine proved the same answer (no
    Python). A rule whose answer changes with depth alone (`src/*/*`, `build/*/*/*/*`) still refuses the
    write one level below; a tree with no such rule is written, and each write is recorded with its own
    path."""
    policy = world.root / "policies" / f"depths-{how}.yaml"
    policy.parent.mkdir(exist_ok=True)
    policy.write_text(DEPTH_POLICY)
    bare_top, top = world.scratch / f"fast-depth-{how}", world.ws / "fast-depth"
    shutil.rmtree(top, ignore_errors=True)
    if how == "existing":  # there before the session
        for root in (bare_top, top):
            for chain in ("src/a", "build/a/b/c", "free/a/b/c/e"):
                (root / chain).mkdir(parents=True, exist_ok=True)
    bare = world.bare_run(_py(world, DEPTHS_PROGRAM, str(bare_top), how))
    assert bare.stdout.split() == ["src=written", "build=written", "free=written"], bare
    run = world.guard_run(_py(world, DEPTHS_PROGRAM, str(top), how), policy=policy)
    assert run.stdout.split() == ["src=EACCES", "build=EACCES", "free=written"], run
    records = [r for r in world.records(run.session) if r.get("type") == "decision"]
    by_target = {r["action"]["target"]: r["decision"] for r in records}
    assert by_target[str(top / "free" / "a" / "b" / "c" / "e" / "x")]["verdict"] == "allow", sorted(by_target)
    for refused, rule in ((top / "src" / "a" / "x", "two-deep"), (top / "build" / "a" / "b" / "c" / "x", "four-deep")):
        assert (by_target[str(refused)]["verdict"], by_target[str(refused)]["rule_id"]) == ("deny", rule)


PROBES = """
import subprocess
empty = os.path.join(d, 'empty-bin')
os.makedirs(empty, exist_ok=True)
path = os.pathsep.join([os.path.join(d, 'missing-bin'), empty, os.path.join(d, 'x', 'y'), '/usr/bin', '/bin'])
rc = subprocess.run(['true'], env={'PATH': path}).returncode
try:
    os.execv(os.path.join(empty, 'nothing'), ['nothing'])
except FileNotFoundError:
    print('probe', rc, 'ENOENT')
"""


def test_a_program_looked_for_along_path_is_not_found_where_it_is_not_and_nothing_is_recorded(world):
    """A shell or execvp tries each PATH entry; where nothing is, the kernel answers ENOENT whatever the
    policy. The core answers those itself, before any decision, as Python does: the run works as bare and
    the trail holds no decision for a name that is not there."""
    bare = world.bare_run(_py(world, PROBES, str(world.scratch / "fast-probes")))
    assert bare.stdout.strip() == "probe 0 ENOENT", bare
    probes = world.ws / "fast-probes"
    run = world.guard_run(_py(world, PROBES, str(probes)))
    assert run.stdout.strip() == "probe 0 ENOENT", run
    targets = [r["action"]["target"] for r in world.records(run.session)
               if r.get("type") == "decision" and r["action"]["op"] != "run"]  # a run's target is its argv
    assert not [t for t in targets if "missing-bin" in t or "empty-bin/" in t or "/x/y" in t], targets


# The core keeps each receiver's last directories by name (guard/_core.c, "each receiver's last
# directories"). A directory it kept is renamed and another put at its name, the task's cwd moves, a
# symlink to a protected directory takes the kept name, the cwd is removed: each next write must reach
# what the kernel resolves now, as bare, and the symlink must not lead a write into the hooks.
KEPT_DIRS = """
os.chdir(d)
out = []
os.mkdir('a')
for i in range(20): open(f'a/f{i}', 'w').close()
os.rename('a', 'b'); os.mkdir('a'); open('a/x', 'w').close()
out.append('x-in-a=%s x-in-b=%s' % (os.path.exists('a/x'), os.path.exists('b/x')))
os.chdir('b'); open('y', 'w').close(); os.chdir('..')
out.append('y-in-b=%s y-in-a=%s' % (os.path.exists('b/y'), os.path.exists('a/y')))
for i in range(20): open(f'a/g{i}', 'w').close()
os.rename('a', 'c'); os.symlink(sys.argv[2], 'a')
try:
    open('a/pre-commit', 'w').write('#!/bin/sh\\necho PWNED\\n'); out.append('hook=written')
except OSError as exc:
    out.append('hook=' + type(exc).__name__)
out.append('in-c=%s' % os.path.exists('c/pre-commit'))
os.mkdir('gone'); os.chdir('gone')
for i in range(5): open(f'w{i}', 'w').close()
for i in range(5): os.unlink(f'w{i}')
os.rmdir(os.path.join(d, 'gone'))
try:
    open('z', 'w'); out.append('z=written')
except OSError as exc:
    out.append('z=' + type(exc).__name__)
print(' '.join(out))
"""


def test_a_kept_directory_renamed_replaced_or_swapped_for_a_symlink_is_resolved_anew(world):
    bare_dir = world.scratch / "fast-kept"
    bare_hooks = world.scratch / "fast-kept-hooks"
    bare_hooks.mkdir()
    bare = world.bare_run(_py(world, KEPT_DIRS, str(bare_dir), str(bare_hooks)))
    assert bare.returncode == 0, bare
    assert "hook=written" in bare.stdout and (bare_hooks / "pre-commit").exists(), bare.stdout
    hooks = world.ws / ".git" / "hooks"
    warm = world.ws / "fast-kept"
    before = (hooks / "pre-commit").read_bytes()  # the engineer's own hook (tests/support/realworld.py)
    run = world.guard_run(_py(world, KEPT_DIRS, str(warm), str(hooks)))
    assert run.returncode == 0, run
    assert (hooks / "pre-commit").read_bytes() == before, run
    assert "hook=written" not in run.stdout, run.stdout
    # a create in a removed cwd: ENOENT bare; the supervisor cannot vouch for a removed directory's path and
    # refuses it (EACCES), with or without the core
    assert "z=written" not in run.stdout, run.stdout
    seen = run.stdout.replace("hook=PermissionError", "hook=written").replace("z=PermissionError",
                                                                             "z=FileNotFoundError")
    assert seen == bare.stdout, (run.stdout, bare.stdout)
    targets = [r["action"]["target"] for r in world.records(run.session) if r.get("type") == "decision"
               and r["action"]["op"] == "write" and r["decision"]["verdict"] == "allow"]
    for name in ("a/f19", "a/x", "b/y", "a/g19"):
        assert str(warm / name) in targets, (name, targets)
    assert str(warm / "b/x") not in targets and str(warm / "c/pre-commit") not in targets, targets


# Writes spread over many directories at once, as git's 256 object directories or a tar filling a tree
# take them: each receiver keeps up to 64 directories (1/32 of guard run's limit of open files, the rest
# is the proxy's and the supervisor's), so after the first round every write in a directory it already
# resolved is served from it (with 8 kept, a round over 30 directories missed on every write).
SPREAD = """
n = int(sys.argv[2])
for i in range(n): os.makedirs(os.path.join(d, f'd{i:02}'))
for r in range(6):
    for i in range(n): open(os.path.join(d, f'd{i:02}', f'f{r}'), 'w').close()
print('ok')
"""


def _kept_capacity(soft_limit: int) -> int:
    """What each receiver keeps under a soft limit of open files (guard/_core.c, dir_cache_capacity)."""
    return 64 if soft_limit == resource.RLIM_INFINITY else max(4, min(64, soft_limit // 32))


def _spread(world, warm, dirs: int, prefix: Sequence[str] = ()) -> dict[str, int]:
    run = world.guard_run(_py(world, SPREAD, str(warm), str(dirs)), env={"GUARD_SUPERVISOR_STATS": "1"},
                          prefix=prefix)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run
    counts: dict[str, int] = ast.literal_eval(run.stderr.split("core: ", 1)[1].splitlines()[0])
    assert counts["fast_writes"] >= 6 * dirs, counts
    targets = {r["action"]["target"] for r in world.records(run.session) if r.get("type") == "decision"
               and r["action"]["op"] == "write"}
    assert all(str(warm / f"d{i:02}" / f"f{r}") in targets for i in range(dirs) for r in range(6)), run
    return counts


def test_writes_spread_over_many_directories_are_served_from_the_kept_ones(world):
    capacity = _kept_capacity(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    if capacity < 16:
        pytest.skip(f"this limit of open files lets a receiver keep {capacity} directories only")
    dirs = min(40, capacity - 2)
    counts = _spread(world, world.ws / "fast-spread", dirs)
    # 6 rounds over the directories; each of the two receivers resolves each directory once at most
    assert counts["kept_dirs"] >= 6 * dirs - 2 * dirs, (dirs, counts)


def test_a_low_limit_of_open_files_bounds_the_kept_directories(world):
    """Under a soft limit of 256 open files a receiver keeps 8 directories: a spread over 40 misses (the
    writes are still made and recorded, through the core), one over 6 is served from them."""
    low = ["/bin/sh", "-c", 'ulimit -Sn 256 && exec "$@"', "sh"]
    wide = _spread(world, world.ws / "fast-low-wide", 40, prefix=low)
    assert wide["kept_dirs"] < 240 // 2, wide
    narrow = _spread(world, world.ws / "fast-low-narrow", 6, prefix=low)
    assert narrow["kept_dirs"] >= 36 - 2 * 6, narrow


# glibc's fchmodat(..., AT_SYMLINK_NOFOLLOW) opens the name O_PATH and chmods "/proc/self/fd/N" (tar sets
# every mode so): the core changes the task's descriptor N as the kernel would, O_PATH ones included, a
# directory too, and records the file's own name; set-id and a thread that is not the leader go to Python.
PROC_CHMOD = """
for i in range(20): open(os.path.join(d, f'f{i}'), 'w').close()
os.mkdir(os.path.join(d, 'sub'))
out = []
for name, mode in (('f1', 0o640), ('sub', 0o700), ('f2', 0o2755)):
    fd = os.open(os.path.join(d, name), os.O_PATH | os.O_NOFOLLOW)
    try:
        os.chmod('/proc/self/fd/%d' % fd, mode); out.append(name + '=' + oct(os.stat(os.path.join(d, name)).st_mode & 0o7777))
    except OSError as exc:
        out.append(name + '=' + type(exc).__name__)
    os.close(fd)
import threading
def other():
    fd = os.open(os.path.join(d, 'f3'), os.O_RDONLY)
    os.chmod('/proc/self/fd/%d' % fd, 0o604); out.append('thread=' + oct(os.stat(os.path.join(d, 'f3')).st_mode & 0o7777))
    os.close(fd)
t = threading.Thread(target=other); t.start(); t.join()
print(' '.join(out))
"""


def test_a_mode_set_through_proc_self_fd_is_the_kernels_and_recorded_by_the_files_name(world):
    bare_dir = world.scratch / "fast-proc-chmod"
    bare = world.bare_run(_py(world, PROC_CHMOD, str(bare_dir)))
    assert bare.returncode == 0 and "f1=0o640" in bare.stdout and "sub=0o700" in bare.stdout, bare
    warm = world.ws / "fast-proc-chmod"
    run = world.guard_run(_py(world, PROC_CHMOD, str(warm)))
    assert run.returncode == 0, run
    # a set-group-id file mode is refused under guard (recorded by Python), as everywhere
    assert run.stdout == bare.stdout.replace("f2=0o2755", "f2=PermissionError"), (run.stdout, bare.stdout)
    targets = [r["action"]["target"] for r in world.records(run.session) if r.get("type") == "decision"
               and r["action"]["op"] == "write" and r["decision"]["verdict"] == "allow"]
    for name, count in (("f1", 2), ("sub", 2), ("f3", 2)):  # made, then its mode set
        assert targets.count(str(warm / name)) == count, (name, targets)


# A directory with a default ACL: the kernel gives what is made in it the ACL's permissions and ignores the
# umask. The supervisor makes the files and directories for the task; with the task's umask in effect on
# its own thread the kernel decides the mode as it does bare (it used to be the umask's, always), through
# the core and through Python alike.
ACL_MODES = """
os.umask(0o077)
for i in range(20): open(os.path.join(d, f'f{i}'), 'w').close()
os.mkdir(os.path.join(d, 'sub'))
os.mkfifo(os.path.join(d, 'fifo'))
m = lambda n: oct(os.stat(os.path.join(d, n)).st_mode & 0o7777)
print(' '.join(n + '=' + m(n) for n in ('f0', 'f19', 'sub', 'fifo')))
"""


def _default_acl(directory):
    """user::rwx group::rwx other::rwx as the directory's default ACL (the kernel's xattr format)."""
    import struct
    acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, 7, 0xFFFFFFFF) for tag in (0x01, 0x04, 0x20))
    directory.mkdir(parents=True)
    try:
        os.setxattr(directory, "system.posix_acl_default", acl)
    except OSError as exc:
        pytest.skip(f"this file system takes no default ACL here ({exc.strerror}): the kernel's own modes "
                    "cannot be shown")


@pytest.mark.parametrize("core", ["core", "python"])
def test_what_is_made_in_a_directory_with_a_default_acl_gets_the_kernels_mode(world, core):
    bare_dir = world.scratch / f"fast-acl-{core}"
    _default_acl(bare_dir)
    bare = world.bare_run(_py(world, ACL_MODES, str(bare_dir)))
    assert bare.returncode == 0 and "f19=0o666" in bare.stdout, bare  # the ACL's, not the umask's 0o600
    warm = world.ws / f"fast-acl-{core}"
    _default_acl(warm)
    run = world.guard_run(_py(world, ACL_MODES, str(warm)), env={"GUARD_FAST_PATH": "1" if core == "core" else "0"})
    assert run.returncode == 0, run
    assert run.stdout == bare.stdout, (run.stdout, bare.stdout)


# Paths with ".." (a build writing `../obj/x.o`, `git clone ../up.git` linking every object from a path
# through ".."): the core takes them when its walk of the directory meets no symlink and the directory
# reached is the one the path names lexically, the other name Python judges a write on.
DOTDOT_HONEST = """
os.umask(0o022)
p = lambda *n: os.path.join(d, *n)
for i in range(20): open(p(f'f{i}'), 'w').close()
os.makedirs(p('a', 'b')); os.makedirs(p('obj'))
os.chdir(p('a', 'b'))
out = []
for i in range(30): open(f'../../obj/o{i}', 'w').write(str(i))
out.append('writes=' + ''.join(open(p('obj', f'o{i}')).read() for i in range(30)))
os.mkdir('../m'); out.append('mkdir=' + str(os.path.isdir(p('a', 'm'))))
open('../../a/./b/../y', 'w').write('Y')
os.rename('../y', '../../z'); out.append('rename=' + open(p('z')).read() + str(os.path.exists(p('a', 'y'))))
os.link('../../z', '../../obj/../z2'); out.append('link=' + str(os.stat(p('z')).st_nlink))
os.utime('../../z2', (1_000_000_000, 1_100_000_000)); out.append('utime=' + str(int(os.stat(p('z')).st_mtime)))
os.unlink('../../z2'); out.append('unlink=' + str(os.path.exists(p('z2'))))
for what, act in (('missing', lambda: open('../nowhere/../x', 'w')),
                  ('file-as-dir', lambda: open('../../z/../x', 'w'))):
    try:
        act(); out.append(what + '=done')
    except OSError as exc:
        out.append(what + '=' + type(exc).__name__)
print(' '.join(out))
"""


def test_paths_with_dotdot_are_the_kernels_in_the_core_and_recorded_by_their_own_names(world):
    bare = world.bare_run(_py(world, DOTDOT_HONEST, str(world.scratch / "fast-dotdot")))
    assert bare.returncode == 0 and "missing=FileNotFoundError" in bare.stdout, bare
    warm = world.ws / "fast-dotdot"
    run = world.guard_run(_py(world, DOTDOT_HONEST, str(warm)), env={"GUARD_SUPERVISOR_STATS": "1"})
    assert run.returncode == 0 and run.stdout == bare.stdout, (run, bare.stdout)
    writes = [r for r in world.records(run.session) if r.get("type") == "decision"
              and r["action"]["op"] == "write" and r["action"]["target"].startswith(str(warm) + "/")]
    targets = [r["action"]["target"] for r in writes]
    assert not [t for t in targets if "/../" in t or "/./" in t], targets  # each by its own name
    for name in [f"obj/o{i}" for i in range(30)] + ["a/m", "a/y", "z", "z2"]:
        assert str(warm / name) in targets, (name, targets)
    # the 30 writes through ".." and the names made and moved were answered by the core, not by Python
    python = int(run.stderr.split("guard: supervisor: ", 1)[1].split(" answered in Python", 1)[0])
    assert python < 30, run.stderr


DOTDOT_ATTACK = """
for i in range(20): open(os.path.join(d, f'f{i}'), 'w').close()
os.symlink(sys.argv[2], os.path.join(d, 's'))  # a directory inside a protected one
os.makedirs(os.path.join(d, 'a'))
os.symlink(sys.argv[2], os.path.join(d, 'a', 't'))
out = []
for label, path in (('through-link', os.path.join(d, 's', '..', 'pre-push')),
                    ('relative', 's/../post-checkout'),
                    ('deeper', os.path.join('a', 't', '..', '..', os.path.basename(os.path.dirname(sys.argv[2])),
                                            'pre-rebase')),
                    ('up-and-out', os.path.relpath(sys.argv[3], d))):
    try:
        open(path, 'w').write('PWNED\\n'); out.append(label + '=done')
    except OSError as exc:
        out.append(label + '=' + type(exc).__name__)
print(' '.join(out))
"""


def test_dotdot_after_a_symlink_or_out_of_the_workspace_is_not_taken_by_the_core(world):
    """`s/../pre-push` with `s` a symlink to `.git/hooks/inner` is `.git/hooks/pre-push` to the kernel,
    and `../../outside/file` is outside the workspace: in a warm directory both go to Python, which
    refuses; bare, each is written."""
    bare_hooks = world.scratch / "fast-dotdot-bare-hooks"
    (bare_hooks / "inner").mkdir(parents=True)
    bare_out = world.scratch / "fast-dotdot-bare-outside.txt"
    bare_dir = world.scratch / "fast-dotdot-attack"
    bare_dir.mkdir()
    bare = world.bare_run(["/bin/sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", str(bare_dir),
                           *_py(world, DOTDOT_ATTACK, str(bare_dir), str(bare_hooks / "inner"), str(bare_out))])
    assert bare.stdout.split() == ["through-link=done", "relative=done", "deeper=done", "up-and-out=done"], bare
    assert (bare_hooks / "pre-push").exists() and bare_out.exists(), bare
    hooks = world.ws / ".git" / "hooks"
    (hooks / "inner").mkdir(exist_ok=True)
    victim = world.outside / "fast-dotdot-victim.txt"
    warm = world.ws / "fast-dotdot-attack"
    warm.mkdir()
    run = world.guard_run(["/bin/sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", str(warm),
                           *_py(world, DOTDOT_ATTACK, str(warm), str(hooks / "inner"), str(victim))])
    assert "=done" not in run.stdout, run
    for name in ("pre-push", "post-checkout", "pre-rebase"):
        assert not (hooks / name).exists() or "PWNED" not in (hooks / name).read_text(), (name, run)
    assert not victim.exists(), run
    world.assert_denied(run, "write", hooks / "pre-push")


# A name to create that is already there: EEXIST from the kernel before any permission is looked at, and
# from guard before any decision, whether the directory is one the core answers for or a protected one
# (npm and mkdir -p ask to create every directory again and again: 920 of an npm install's mkdirs went
# to Python before the core answered them too).
EXISTING = """
targets = sys.argv[2:]
out = []
for t in targets:
    for what, act in (('mkdir', lambda: os.mkdir(t)), ('excl', lambda: os.open(t, os.O_CREAT | os.O_EXCL | os.O_WRONLY)),
                      ('symlink', lambda: os.symlink('x', t))):
        n = 0
        for _ in range(40):
            try:
                act()
            except FileExistsError:
                n += 1
        out.append(f'{what}={n}')
print(' '.join(out))
"""


def test_a_name_that_is_there_is_eexist_from_the_core_anywhere_and_nothing_is_recorded(world):
    hooks = world.ws / ".git" / "hooks"
    targets = [hooks, world.ws / ".git" / "config", world.ws / "fast-exists"]
    (world.ws / "fast-exists").mkdir()
    bare_targets = [world.scratch / "fast-exists-a", world.scratch / "fast-exists-b"]
    for t in bare_targets:
        t.mkdir()
    bare = world.bare_run(_py(world, EXISTING, str(world.scratch / "fast-exists-warm"), *map(str, bare_targets)))
    assert bare.stdout.split() == ["mkdir=40", "excl=40", "symlink=40"] * 2, bare
    run = world.guard_run(_py(world, EXISTING, str(world.ws / "fast-exists-warm"), *map(str, targets)),
                          env={"GUARD_SUPERVISOR_STATS": "1"})
    assert run.returncode == 0 and run.stdout.split() == ["mkdir=40", "excl=40", "symlink=40"] * 3, run
    recorded = {r["action"]["target"] for r in world.records(run.session) if r.get("type") == "decision"}
    assert not recorded & {str(t) for t in targets}, recorded
    python = int(run.stderr.split("guard: supervisor: ", 1)[1].split(" answered in Python", 1)[0])
    assert python < 40, run.stderr  # 360 calls, the core answered them


# A ".." path from a working directory whose name the kernel cannot even give back (longer than PATH_MAX):
# the core cannot name the directory lexically, so it hands the call to Python, which cannot name it
# either and answers ENAMETOOLONG. (The core compared the two names even when it had neither.)
DEEP_CWD = """
import errno
for i in range(20): open(os.path.join(d, f'f{i}'), 'w').close()
os.chdir(d)
for i in range(20):
    os.chdir('L%02d' % i + 'x' * 250)
out = []
for what, path in (('up', '../w1'), ('down-up', 'a/../w2')):
    try:
        open(path, 'w').write('x'); out.append(what + '=done')
    except OSError as exc:
        out.append(what + '=' + errno.errorcode[exc.errno])
print(' '.join(out))
"""


def _deep_tree(top: Path) -> None:
    """20 nested directories of 253-byte names under `top`, and `a` in the deepest (made with directory
    descriptors: the whole path is longer than PATH_MAX)."""
    top.mkdir(parents=True, exist_ok=True)
    fd = os.open(top, os.O_DIRECTORY)
    try:
        for i in range(20):
            name = f"L{i:02d}" + "x" * 250
            os.mkdir(name, dir_fd=fd)
            nxt = os.open(name, os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        os.mkdir("a", dir_fd=fd)
    finally:
        os.close(fd)


def test_dotdot_from_a_working_directory_longer_than_path_max_is_left_to_python(world):
    _deep_tree(world.scratch / "fast-deep")
    bare = world.bare_run(_py(world, DEEP_CWD, str(world.scratch / "fast-deep")))
    assert bare.stdout.split() == ["up=done", "down-up=done"], bare
    _deep_tree(world.ws / "fast-deep")
    run = world.guard_run(_py(world, DEEP_CWD, str(world.ws / "fast-deep")))
    assert run.returncode == 0, run  # guard run survived and the agent's exit status is its own
    # Python cannot name the working directory either: ENAMETOOLONG (where bare succeeds: README, refused)
    assert run.stdout.split() == ["up=ENAMETOOLONG", "down-up=ENAMETOOLONG"], run
    world.check_trail()
