"""Set-id files and file capabilities: a file the session marks set-user-id (or gives capabilities) runs
as the session's user for whoever executes it later, outside the sandbox: another local user, or anyone
at all when the session ran as root (euid 0). And the supervisor, which performs opens and attribute
changes for the task, must never lend it its own privileges.

Bare, each attack works; under guard each is refused (EPERM) and recorded, or, for a create, the file
comes out without its set-id bits.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(180)
ROOT = os.geteuid() == 0
SUPERVISOR_RULE = "guard-supervisor"

# Each makes $F set-id (or privileged) the way an attacker would.
SETTERS = {
    "chmod-4755": 'chmod 4755 "$F"',
    "chmod-u+s": 'chmod u+s "$F"',
    "chmod-g+s": 'chmod g+s "$F"',
    "fchmod": "python3 -I -c 'import os; fd = os.open(os.environ[\"F\"], os.O_RDONLY); os.fchmod(fd, 0o6755)'",
    "install-m": 'cp "$F" "$F.src" && rm "$F" && install -m 4755 "$F.src" "$F"',
}


def _place(world, where: str, name: str):
    base = world.ws if where == "workspace" else world.scratch
    path = base / name
    shutil.copy("/bin/true", path)
    path.chmod(0o755)
    return path


def _setid(path) -> int:
    return stat.S_IMODE(path.stat().st_mode) & (stat.S_ISUID | stat.S_ISGID)


@pytest.mark.parametrize("where", ["workspace", "tmp"])
@pytest.mark.parametrize("how", list(SETTERS))
def test_making_a_file_set_id(world, how, where):
    bare_file = _place(world, where, f"bare-{how}")
    world.bare_run(world.sh(SETTERS[how]), env={"F": str(bare_file)})
    assert _setid(bare_file), f"bare {how} did not set a set-id bit"
    if where == "workspace":
        target = _place(world, where, f"g-{how}")
        run = world.guard_run(world.sh(SETTERS[how] + " && echo SET"), env={"F": str(target)})
        assert not _setid(target), f"{target} became set-id under guard: {run!r}"
    else:  # the session's /tmp is its own: the agent makes the file there itself, then tries the bits
        target = Path("/tmp") / f"guard-setid-{how}"
        script = (f'cp /bin/true "$F" && chmod 755 "$F" && {{ {SETTERS[how]} && echo SET; }}; '
                  'stat -c MODE=%a "$F"')
        run = world.guard_run(world.sh(script), env={"F": str(target)})
        mode = next((line[5:] for line in run.stdout.splitlines() if line.startswith("MODE=")), "")
        assert mode and not int(mode, 8) & (stat.S_ISUID | stat.S_ISGID), \
            f"{target} became set-id under guard: {run!r}"
    assert "SET" not in run.stdout, run
    refused = [r for r in world.records(run.session) if r.get("type") == "decision"
               and r["decision"]["verdict"] == "deny" and r["decision"].get("rule_id") == SUPERVISOR_RULE]
    assert any(r["action"]["target"] == str(target) for r in refused), f"no recorded refusal: {refused}"


CREATE = ("import os; fd = os.open(os.environ['F'], os.O_CREAT | os.O_WRONLY, 0o6755); os.close(fd); "
          "os.mknod(os.environ['F'] + '.node', 0o106755); print('MADE')")


def test_creating_a_set_id_file(world):
    """open(O_CREAT, 06755) makes a set-id file bare; the supervisor creates it without those bits. mknod of
    a set-id regular file is refused outright."""
    bare_file = world.scratch / "bare-created"
    world.bare_run(world.py(CREATE), env={"F": str(bare_file)})
    assert _setid(bare_file) and _setid(world.scratch / "bare-created.node")
    target = world.ws / "created"
    run = world.guard_run(world.py(CREATE), env={"F": str(target)})
    assert target.exists() and not _setid(target), run
    assert not (world.ws / "created.node").exists() and "MADE" not in run.stdout, run
    world.assert_denied(run, "write", world.ws / "created.node")


CAP = ("import os, struct; os.setxattr(os.environ['F'], 'security.capability', "
       "struct.pack('<IIIII', 0x02000001, 1 << 12, 0, 0, 0)); print('CAP-SET')")


@pytest.mark.skipif(not ROOT, reason="setting file capabilities needs CAP_SETFCAP: bare it only works as root")
def test_file_capabilities(world):
    bare_file = _place(world, "tmp", "bare-cap")
    bare = world.bare_run(world.py(CAP), env={"F": str(bare_file)})
    assert "CAP-SET" in bare.stdout and os.getxattr(bare_file, "security.capability"), bare
    target = _place(world, "workspace", "g-cap")
    run = world.guard_run(world.py(CAP), env={"F": str(target)})
    assert "CAP-SET" not in run.stdout, run
    with pytest.raises(OSError):
        os.getxattr(target, "security.capability")
    world.assert_denied(run, "write", target)


@pytest.mark.skipif(not ROOT, reason="needs root: the guard's own DAC override is what the attack borrows")
def test_the_supervisor_lends_no_privilege(world):
    """guard run as root: the agent is root without capabilities, so it cannot write a 0444 file owned by
    another user; the supervisor, which opens and changes files for it, must not either. The directory is
    written first, so the compiled core (whose receivers act without effective capabilities) answers the
    attempts, not only Python."""
    lend = world.ws / "lend"
    lend.mkdir()
    theirs = lend / "owned-by-nobody.txt"
    theirs.write_text("original\n")
    os.chown(theirs, 65534, 65534)
    theirs.chmod(0o444)
    script = ('for i in 1 2 3 4 5; do : > "$(dirname "$F")/warm$i"; done; '
              'printf pwned >> "$F"; chmod 666 "$F"; printf pwned > "$F"; echo done')
    bare_dir = world.scratch / "lend"
    bare_dir.mkdir()
    bare_copy = bare_dir / "owned-by-nobody.txt"
    shutil.copy(theirs, bare_copy)
    os.chown(bare_copy, 65534, 65534)
    bare_copy.chmod(0o444)
    world.bare_run(world.sh(script), env={"F": str(bare_copy)})
    assert "pwned" in bare_copy.read_text(), "bare root writes it (that is the privilege not to lend)"
    run = world.guard_run(world.sh(script), env={"F": str(theirs), "GUARD_SUPERVISOR_STATS": "1"})
    assert "core: {'fast_writes'" in run.stderr and "'fast_writes': 0," not in run.stderr, run  # the core took part
    st = theirs.stat()
    assert theirs.read_text() == "original\n" and stat.S_IMODE(st.st_mode) == 0o444, run
    assert run.stderr.count("Permission denied") + run.stderr.count("Operation not permitted") >= 3, run


def _outside_scratch() -> Path | None:
    """A workspace outside /tmp, /var/tmp and /dev/shm (those are the session's own tmpfs, already
    nosuid): the layout of an engineer whose code lies in /home or /srv. Root only can make one."""
    for base in ("/var/lib", "/srv", "/opt"):
        if os.path.isdir(base) and os.access(base, os.W_OK):
            return Path(tempfile.mkdtemp(prefix="guard-escape-ws-", dir=base))
    return None


@pytest.mark.skipif(not ROOT, reason="needs root: mknod of a device node (CAP_MKNOD), and a workspace outside "
                                     "the shared scratch directories, which only root can create")
def test_device_node_and_set_id_in_a_writable_tree_mean_nothing(world):
    """A device node planted before launch in a writable tree (here a copy of /dev/null's numbers; an
    attacker's would be a disk) opens bare; under guard the tree is mounted nodev (and nosuid), so it
    does not. The workspace lies outside /tmp, where no other mount of the sandbox covers it."""
    ws = _outside_scratch()
    if ws is None:
        pytest.skip("no writable directory outside the shared scratch places (/var/lib, /srv, /opt)")
    try:
        node = ws / "disk"
        os.mknod(node, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        probe = ("for line in open('/proc/self/mountinfo'):\n"
                 f"    f = line.split()\n    if f[4] == {str(ws)!r}: print('OPTS', f[5])\n"
                 "open('disk').read(); print('OPENED')\n")
        bare = world.bare_run(world.py(probe), cwd=ws)
        assert "OPENED" in bare.stdout, bare
        run = world.guard_run(world.py(probe), cwd=ws, extra_args=["--workspace", str(ws)])
        assert "OPENED" not in run.stdout and "Permission denied" in run.stderr, run
        opts = next((line.split()[1] for line in run.stdout.splitlines() if line.startswith("OPTS")), "")
        assert {"nosuid", "nodev"} <= set(opts.split(",")), run
    finally:
        shutil.rmtree(ws)


RACE_TIMES = """
import os, sys, threading
victim = os.path.expanduser('~/.claude/victim')
open('mine.txt', 'w').write('mine')
for stale in ('link', 'link.tmp0', 'link.tmp1'):
    if os.path.lexists(stale):
        os.unlink(stale)
print('READY', flush=True)
sys.stdin.readline()  # the test creates the victim after launch (so no mount protects it: the policy must)
stop = False
def flip():  # `link` points at the agent's own file, then at the victim, then back, as fast as it can
    i = 0
    while not stop:
        i += 1
        tmp = 'link.tmp%d' % (i % 2)
        os.symlink(victim if i % 2 else 'mine.txt', tmp)
        os.replace(tmp, 'link')
os.symlink('mine.txt', 'link')
t = threading.Thread(target=flip)
t.start()
try:
    for _ in range(int(sys.argv[1])):
        try:
            os.utime('link', (1000000000, 1000000000))
        except OSError:
            pass
        if os.stat(victim).st_mtime == 1000000000:
            print('RACED', flush=True)
            break
finally:
    stop = True
    t.join()
print('DONE', flush=True)
"""


def test_times_by_path_cannot_be_raced_onto_a_protected_file(world):
    """utimensat by path, checked on the path and then continued, lets a thread that swaps a symlink
    between the check and the kernel's own lookup change the times of a file the policy write-protects
    (make a stale build output look fresh, hide an edit). The supervisor now performs the change itself on
    the object it resolved and judged. Bare the change lands at once; under guard never, in 1,500 tries."""
    victim = world.home / ".claude" / "victim"
    victim.parent.mkdir(exist_ok=True)
    policy = world.root / "policies" / "times.yaml"
    policy.write_text("version: 1\nname: times\nextends: [coding-agent]\nrules:\n"
                      "  - id: victim-protected\n    deny: [write]\n    paths: [~/.claude/victim]\n")
    for guarded in (False, True):
        victim.unlink(missing_ok=True)
        argv = [*world.py(RACE_TIMES), "1500" if guarded else "1000000"]
        if guarded:
            argv = world.guard_run_argv(argv, policy=policy)
        proc = subprocess.Popen(argv, env=world.env, cwd=world.ws, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        world.track(proc.pid)
        try:
            assert proc.stdout is not None and proc.stdin is not None
            assert proc.stdout.readline().strip() == "READY"
            victim.write_text("the engineer's\n")
            os.utime(victim, (2000000000, 2000000000))
            proc.stdin.write("go\n")
            proc.stdin.flush()
            out, err = proc.communicate(timeout=150)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if not guarded:
            assert "RACED" in out and victim.stat().st_mtime == 1000000000, (out, err)
        else:
            assert "DONE" in out and "RACED" not in out, (out, err.splitlines()[1:])
            assert victim.stat().st_mtime == 2000000000, (out, err)
            session = json.loads(err.strip().splitlines()[-1])["session"]
            refused = [t for op, t, v in world.decisions(session, "deny") if op == "write"]
            assert str(victim) in refused, refused  # the swaps were attempted, and refused on the victim


def test_honest_times_still_work(world):
    """Honest: touch (now), touch -d (a date), touch -h (a symlink's own times), make's utime, UTIME_OMIT."""
    script = ("touch t1 && touch -d 2001-09-09T01:46:40Z t2 && ln -sf t2 l && touch -h -d 2002-01-01 l && "
              "python3 -I -c \"import os; os.utime('t1', ns=(5 * 10**9, 7 * 10**9)); "
              "os.utime('t2', (0, 0)); os.utime('t2', None)\" && "
              "stat -c '%n %Y' t1 l && echo OK")
    run = world.guard_run(world.sh(script))
    assert run.returncode == 0 and "OK" in run.stdout, run
    assert "t1 7" in run.stdout and "l 1009843200" in run.stdout, run


def test_set_group_id_directories_still_work(world):
    """Honest: a shared directory with g+s (files inherit its group) is not a set-id program."""
    run = world.guard_run(world.sh("mkdir -p shared && chmod g+s shared && stat -c %A shared"))
    assert run.returncode == 0 and "s" in run.stdout.split()[0][4:7], run


def test_zz_trail_verifies(world):
    world.check_trail()


FILE_SETATTR = """
import ctypes, errno, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
attr = ctypes.create_string_buffer(struct.pack('=QIIII', 0x80, 0, 0, 0, 0), 24)  # FS_XFLAG_NODUMP
open(sys.argv[1], 'w').close()
rc = libc.syscall(469, -100, sys.argv[1].encode(), attr, ctypes.c_size_t(24), 0)  # file_setattr
print('rc', rc, errno.errorcode.get(ctypes.get_errno(), 0) if rc else 'ok')
"""


@pytest.mark.skipif(os.uname().machine not in ("x86_64", "aarch64"), reason="file_setattr is 469 here only")
def test_file_setattr_by_path_is_performed_with_the_kernels_answer(world):
    """file_setattr (Linux 6.17) by path is performed by the supervisor on the object it judged, so a path
    swapped after the check changes nothing; what the task gets back is what the kernel answers bare
    (success, or the file system's own refusal)."""
    bare = world.bare_run(["/usr/bin/python3", "-I", "-c", FILE_SETATTR, str(world.scratch / "setattr")])
    if "ENOSYS" in bare.stdout:
        pytest.skip("this kernel has no file_setattr")
    run = world.guard_run(["/usr/bin/python3", "-I", "-c", FILE_SETATTR, str(world.ws / "setattr")])
    assert run.returncode == 0 and run.stdout == bare.stdout, (run, bare.stdout)
    assert any(t == str(world.ws / "setattr") for _, t, v in world.decisions(run.session, "allow")), run
