"""The kernel tier against the real kernel: real sandboxed /bin/sh processes, real masks, real namespaces.

Each test builds a policy by hand (the shape guard.policy hands the planner), scans, plans and spawns,
then checks from inside and outside. The key ones run again as the unprivileged user `nobody`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.policy_doubles import Pol, Rule

from guard.errors import SandboxError
from guard.model import Op, Verdict
from guard.sandbox import _syscalls as sc
from guard.sandbox import namespaces
from guard.sandbox.launch import SandboxedProcess, spawn
from guard.sandbox.plan import build_plan
from guard.sandbox.report import State
from guard.sandbox.scan import scan_launch_facts

ABI = sc.landlock_abi()
NS_PROBLEM = namespaces.probe()
pytestmark = [
    pytest.mark.landlock,
    pytest.mark.skipif(ABI == 0, reason="Landlock is not available on this kernel"),
    pytest.mark.skipif(NS_PROBLEM is not None, reason=f"cannot create the sandbox namespaces: {NS_PROBLEM}"),
]

NOBODY = 65534
SYSTEM = ("/usr/**", "/bin/**", "/lib/**", "/lib64/**", "/etc/**", "/proc/**", "/sys/**")
ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}




@dataclass
class Tree:
    root: Path
    ws: Path
    home: Path
    other: Path
    gh: Path

    def policy(self, *extra: Rule) -> Pol:
        rw = frozenset({Op.READ, Op.WRITE})
        return Pol((Rule("system", Verdict.ALLOW, frozenset({Op.READ, Op.EXEC}), SYSTEM),
                    Rule("devnull", Verdict.ALLOW, rw, ("/dev/null",)),
                    Rule("ws", Verdict.ALLOW, rw, (f"{self.ws}/**",)),
                    Rule("home", Verdict.ALLOW, frozenset({Op.READ}), (f"{self.home}/**",)),
                    Rule("ssh", Verdict.DENY, rw, (f"{self.home}/.ssh/**",)),
                    Rule("env", Verdict.DENY, rw, ("/**/.env",)),
                    Rule("hooks", Verdict.ASK, frozenset({Op.WRITE}), (f"{self.ws}/.git/hooks/**",)),
                    *extra))

    def launch(self, script: str, *, policy: Pol | None = None, ports: tuple[int, ...] = (),
               cwd: Path | None = None) -> SandboxedProcess:
        pol = policy or self.policy()
        facts = scan_launch_facts(pol, workspace=self.ws, protected=[self.gh], home=self.home)
        plan = build_plan(pol, facts, workspace=self.ws, protected=[self.gh], abi=ABI)
        out = self.ws / "out.txt"
        return spawn(plan, ["/bin/sh", "-c", f"exec >{out} 2>&1\n{script}"], env=ENV, cwd=cwd or self.ws,
                     seccomp=None, inner_listen_ports=ports)

    def run(self, script: str, **kw: object) -> tuple[int, str]:
        sp = self.launch(script, **kw)  # type: ignore[arg-type]
        try:
            sp.start()
            rc = sp.wait()
        finally:
            sp.kill()
            sp.close()
        return rc, (self.ws / "out.txt").read_text()


def make_tree(root: Path) -> Tree:
    ws, home, other, gh = root / "ws", root / "home", root / "other", root / "guard-home"
    for d in (ws / ".git" / "hooks", home / ".ssh", other, gh / "keys"):
        d.mkdir(parents=True)
    (ws / ".env").write_text("SECRET=hunter2\n")
    (ws / ".git" / "hooks" / "pre-commit").write_text("#!/bin/sh\n")
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE KEY\n")
    (home / ".gitconfig").write_text("[user]\n")
    (gh / "keys" / "epoch.key").write_text("GUARD KEY\n")
    (other / "existing").write_text("outside\n")
    return Tree(root, ws, home, other, gh)


@pytest.fixture
def private_tmp() -> Iterator[Path]:
    """A scratch directory outside pytest's basetemp: concurrent pytest runs on this machine prune old
    basetemps, which would pull the tree out from under a running sandbox."""
    root = Path(tempfile.mkdtemp(prefix="guard-launch-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def tree(private_tmp: Path) -> Tree:
    return make_tree(private_tmp)


# --- files -----------------------------------------------------------------------------------------------
def test_granted_dir_writable_and_other_dir_not(tree: Tree) -> None:
    rc, out = tree.run(f"echo ok > {tree.ws}/new && echo wrote-ws\n"
                       f"echo bad > {tree.other}/new || echo denied-other\n"
                       f"cat {tree.other}/existing || echo unreadable-other\n")
    assert rc == 0, out
    assert "wrote-ws" in out and "denied-other" in out and "unreadable-other" in out
    assert "Permission denied" in out
    assert (tree.ws / "new").read_text() == "ok\n"
    assert not (tree.other / "new").exists()


def test_exec_from_a_non_exec_path_fails(tree: Tree) -> None:
    shutil.copy("/bin/true", tree.ws / "mytrue")
    os.chmod(tree.ws / "mytrue", 0o755)
    rc, out = tree.run("./mytrue; echo rc=$?\n/bin/true; echo sys=$?")
    assert "rc=126" in out and "sys=0" in out, out
    assert rc == 0


def test_denied_file_inside_granted_tree_is_masked(tree: Tree) -> None:
    _, out = tree.run(f"cat {tree.ws}/.env; echo read=$?\n"
                       f"echo stolen > {tree.ws}/.env; echo write=$?\n"
                       f"rm {tree.ws}/.env; echo rm=$?\n"
                       f"cat {tree.home}/.ssh/id_ed25519; echo ssh=$?\n"
                       f"cat {tree.home}/.gitconfig")
    assert "hunter2" not in out and "PRIVATE KEY" not in out, out
    assert "write=0" not in out and "rm=0" not in out
    assert "[user]" in out  # the rest of home stays readable
    assert (tree.ws / ".env").read_text() == "SECRET=hunter2\n"


def test_write_protected_path_is_read_only_but_readable(tree: Tree) -> None:
    hook = tree.ws / ".git" / "hooks" / "pre-commit"
    _, out = tree.run(f"cat {hook}; echo 'curl evil' >> {hook}; echo append=$?\n"
                       f"echo x > {tree.ws}/.git/hooks/post-checkout; echo create=$?")
    assert "append=0" not in out and "create=0" not in out, out
    assert "#!/bin/sh" in out
    assert hook.read_text() == "#!/bin/sh\n"
    assert not (tree.ws / ".git" / "hooks" / "post-checkout").exists()


def test_hard_link_planted_before_launch_is_masked(tree: Tree) -> None:
    os.link(tree.home / ".ssh" / "id_ed25519", tree.ws / "notes.txt")
    _, out = tree.run(f"cat {tree.ws}/notes.txt; echo read=$?\necho pwn >> {tree.ws}/notes.txt; echo w=$?")
    assert "PRIVATE KEY" not in out and "w=0" not in out, out
    assert (tree.home / ".ssh" / "id_ed25519").read_text() == "PRIVATE KEY\n"


def test_guard_home_is_invisible_even_if_granted(tree: Tree) -> None:
    pol = tree.policy(Rule("oops", Verdict.ALLOW, frozenset({Op.READ, Op.WRITE}), (f"{tree.gh}/**",)))
    _, out = tree.run(f"ls -A {tree.gh}; echo ls=$?\ncat {tree.gh}/keys/epoch.key; echo cat=$?\n"
                       f"touch {tree.gh}/planted; echo touch=$?", policy=pol)
    assert "GUARD KEY" not in out and "keys" not in out.split("ls=")[0], out
    assert "touch=0" not in out
    assert not (tree.gh / "planted").exists()


# --- processes, signals, sockets, network --------------------------------------------------------------
def test_proc_shows_only_sandbox_pids(tree: Tree) -> None:
    _, out = tree.run("ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' '; echo; cat /proc/1/cmdline | tr '\\0' ' '")
    pids = [int(p) for p in out.splitlines()[0].split()]
    assert 1 in pids and len(pids) <= 5 and max(pids) < 10, out
    assert os.getpid() not in pids or os.getpid() < 10


def test_signal_to_an_outside_process_fails(tree: Tree) -> None:
    victim = subprocess.Popen(["sleep", "60"])
    try:
        _, out = tree.run(f"kill -TERM {victim.pid}; echo kill=$?\nkill -0 1; echo self-init=$?")
        assert "kill=0" not in out, out
        assert victim.poll() is None, "the victim outside the sandbox was signalled"
    finally:
        victim.kill()
        victim.wait()


def test_landlock_signal_scope_refuses_the_sandbox_init(tree: Tree) -> None:
    if ABI < 6:
        pytest.skip(f"Landlock scopes need ABI 6, host has {ABI}")
    # pid 1 is visible (same pid namespace) and has a SIGTERM handler, but it is outside the agent's
    # Landlock domain: only SCOPE_SIGNAL stands between the agent and the guard's own process here.
    rc, out = tree.run("kill -TERM 1; echo kill=$?")
    assert rc == 0 and "kill=0" not in out, out
    assert "not permitted" in out.lower(), out


def test_agent_cannot_read_the_init_environment(tree: Tree) -> None:
    _, out = tree.run("cat /proc/1/environ; echo env=$?\ncat /proc/self/status | head -1\n"
                      "readlink /proc/1/fd/0; echo link=$?\nls /proc/1/root/; echo root=$?")
    assert "env=0" not in out and "link=0" not in out and "root=0" not in out, out
    assert "Name:" in out  # its own entries stay readable


def test_relay_forwards_sigterm_and_ignores_terminal_sigint(tree: Tree) -> None:
    sp = tree.launch("sleep 1000")
    try:
        sp.start()
        assert _wait_until(lambda: len(_descendants(sp.init_pid)) >= 1)
        os.kill(sp.pid, signal.SIGINT)  # Ctrl-C belongs to the agent (same process group), not the relay
        os.kill(sp.init_pid, signal.SIGINT)
        assert not _wait_until(lambda: sp.poll() is not None, limit=0.5)
        os.kill(sp.pid, signal.SIGTERM)
        assert sp.wait() == 128 + signal.SIGTERM
    finally:
        sp.kill()
        sp.close()


def test_abstract_unix_socket_to_outside_listener_fails(tree: Tree) -> None:
    if not Path("/usr/bin/python3").exists():
        pytest.skip("needs /usr/bin/python3 inside the sandbox")
    name = f"guard-test-{uuid.uuid4().hex}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("\0" + name)
    listener.listen(1)
    listener.settimeout(0.5)
    try:
        code = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\n"
                f"try:\n  s.connect('\\0{name}'); print('connected')\n"
                "except OSError as e: print('refused', e.errno)\n")
        (tree.ws / "probe.py").write_text(code)
        _, out = tree.run("/usr/bin/python3 probe.py")
        assert "refused" in out and "connected" not in out, out
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()


def test_network_namespace_has_only_lo_and_it_is_up(tree: Tree) -> None:
    _, out = tree.run("ls /sys/class/net | tr '\\n' ' '; echo\ncat /sys/class/net/lo/operstate "
                       "/sys/class/net/lo/flags; hostname")
    first = out.splitlines()[0].split()
    assert first == ["lo"], out
    assert int(out.splitlines()[2], 16) & 1, out  # IFF_UP
    assert out.splitlines()[3] == "guard"


def test_inner_listener_is_handed_to_the_parent(tree: Tree) -> None:
    with socket.socket() as probe:  # pick a port number; inside the netns it is free anyway
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sp = tree.launch(f"/bin/bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}; echo hello-from-inside >&3; "
                     "read reply <&3; echo got=$reply'", ports=(port,), policy=None)
    try:
        assert len(sp.inner_listeners) == 1
        lst = sp.inner_listeners[0]
        assert lst.getsockname() == ("127.0.0.1", port)
        sp.start()
        lst.settimeout(30)
        conn, _ = lst.accept()
        with conn:
            assert conn.makefile().readline() == "hello-from-inside\n"
            conn.sendall(b"pong\n")
        assert sp.wait() == 0
    finally:
        sp.kill()
        sp.close()
    assert "got=pong" in (tree.ws / "out.txt").read_text()


def test_a_denied_file_removed_between_scan_and_launch_is_reported_not_fatal(tree: Tree) -> None:
    pol = tree.policy()
    facts = scan_launch_facts(pol, workspace=tree.ws, protected=[tree.gh], home=tree.home)
    plan = build_plan(pol, facts, workspace=tree.ws, protected=[tree.gh], abi=ABI)
    assert str(tree.ws / ".env") in {m.path for m in plan.mounts}
    (tree.ws / ".env").unlink()
    sp = spawn(plan, ["/bin/true"], env=ENV, cwd=tree.ws, seccomp=None)
    try:
        prot = sp.report.get("files: masks skipped (path gone between scan and launch)")
        assert str(tree.ws / ".env") in prot.reason and not prot.required
        sp.start()
        assert sp.wait() == 0
    finally:
        sp.kill()
        sp.close()


def test_exit_status_as_a_shell_reports_it(tree: Tree) -> None:
    assert tree.run("exit 7")[0] == 7
    assert tree.run("kill -9 $$")[0] == 128 + signal.SIGKILL
    rc, _ = tree.run("exec /no/such/binary")
    assert rc == 127


def test_back_to_back_launches_always_learn_the_init_pid(tree: Tree) -> None:
    """The relay's report and the agent's race; spawn must wait for both, or start() would close the
    channel under the relay and the whole tree would die."""
    pol = tree.policy()
    facts = scan_launch_facts(pol, workspace=tree.ws, protected=[tree.gh], home=tree.home)
    plan = build_plan(pol, facts, workspace=tree.ws, protected=[tree.gh], abi=ABI)
    for _ in range(15):
        sp = spawn(plan, ["/bin/true"], env=ENV, cwd=tree.ws, seccomp=None)
        try:
            assert sp.init_pid > 0 and sp.pid > 0
            sp.start()
            assert sp.wait() == 0
        finally:
            sp.kill()
            sp.close()


def test_relay_and_init_hold_none_of_the_supervisors_descriptors(tree: Tree) -> None:
    held = os.open(tree.other / "existing", os.O_RDONLY)  # stands in for the daemon connection, the log
    sp = tree.launch("sleep 1000")
    try:
        sp.start()
        assert _wait_until(lambda: len(_descendants(sp.init_pid)) >= 1)
        for pid in (sp.pid, sp.init_pid):
            targets = {fd: os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
            assert str(tree.other / "existing") not in targets.values(), (pid, targets)
            # the relay keeps only the pipe the init watches; the init may hold the locked pty masters
            # that keep the session's terminal bound in its own devpts (mounts.private_devpts)
            extra = {fd: t for fd, t in targets.items() if int(fd) > 2 and not t.startswith("pipe:")
                     and not (pid == sp.init_pid and t == "/dev/pts/ptmx")}
            assert not extra, (pid, extra)
    finally:
        os.close(held)
        sp.kill()
        sp.close()


def test_relative_command_runs_from_the_sandbox_cwd(tree: Tree) -> None:
    sub = tree.ws / "sub"
    sub.mkdir()
    (sub / "hello.sh").write_text("#!/bin/sh\necho hello-from-script\n")
    os.chmod(sub / "hello.sh", 0o755)
    pol = tree.policy(Rule("exec-sub", Verdict.ALLOW, frozenset({Op.EXEC, Op.READ}), (f"{sub}/**",)))
    facts = scan_launch_facts(pol, workspace=tree.ws, protected=[tree.gh], home=tree.home)
    plan = build_plan(pol, facts, workspace=tree.ws, protected=[tree.gh], abi=ABI)
    rfd, wfd = os.pipe()
    saved = os.dup(1)
    os.dup2(wfd, 1)
    try:
        sp = spawn(plan, ["./hello.sh"], env=ENV, cwd=sub, seccomp=None)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(wfd)
    try:
        sp.start()
        assert sp.wait() == 0
    finally:
        sp.kill()
        sp.close()
    with os.fdopen(rfd) as r:
        assert r.read() == "hello-from-script\n"


def test_setup_failure_raises_sandbox_error_and_nothing_runs(tree: Tree) -> None:
    marker = tree.ws / "ran"
    with pytest.raises(SandboxError, match="working directory"):
        tree.launch(f"touch {marker}", cwd=tree.root / "vanished")
    assert not marker.exists()


def test_the_agent_holds_no_capabilities_and_no_new_privs(tree: Tree) -> None:
    _, out = tree.run("grep -E '^(CapEff|CapPrm|CapBnd|CapAmb|NoNewPrivs|Seccomp)' /proc/self/status")
    fields = dict(line.split(":\t") for line in out.splitlines())
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapPrm"], 16) == 0, out
    assert int(fields["CapBnd"], 16) == 0 and int(fields["CapAmb"], 16) == 0
    assert fields["NoNewPrivs"].strip() == "1"


def test_umount_of_a_mask_is_refused(tree: Tree) -> None:
    _, out = tree.run(f"umount {tree.ws}/.env; echo umount=$?\ncat {tree.ws}/.env\n"
                      f"unshare -Urm sh -c 'umount -l {tree.ws}/.env; echo nested=$?; cat {tree.ws}/.env'\n"
                      "echo unshare=$?")
    assert "umount=0" not in out and "nested=0" not in out and "hunter2" not in out, out


def test_a_nested_user_and_mount_namespace_cannot_unmount_a_mask(tree: Tree) -> None:
    if not Path("/usr/bin/python3").exists():
        pytest.skip("needs /usr/bin/python3 inside the sandbox")
    code = (f"import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            f"print('unshare', libc.unshare(0x10000000 | 0x00020000))\n"
            f"print('umount', libc.umount2(b'{tree.ws}/.env', 2), os.strerror(ctypes.get_errno()))\n"
            f"print('content', repr(open('{tree.ws}/.env').read()))\n")
    (tree.ws / "nested.py").write_text(code)
    _, out = tree.run("/usr/bin/python3 nested.py")
    assert "umount -1" in out and "hunter2" not in out, out


# --- fail closed ---------------------------------------------------------------------------------------
def _descendants(pid: int) -> set[int]:
    psutil = pytest.importorskip("psutil")
    try:
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def _alive(pid: int) -> bool:
    psutil = pytest.importorskip("psutil")
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_until(cond: Callable[[], bool], limit: float = 20.0) -> bool:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_tree_dies_with_the_supervisor(tree: Tree) -> None:
    rfd, wfd = os.pipe()
    sup = os.fork()
    if sup == 0:  # the stand-in supervisor: spawn, report pids, then wait to be killed
        try:
            os.close(rfd)
            sp = tree.launch("sleep 1000 & sleep 1000 & sleep 1000")
            sp.start()
            os.write(wfd, f"{sp.pid} {sp.init_pid}\n".encode())
            time.sleep(1000)
        finally:
            os._exit(1)
    os.close(wfd)
    try:
        with os.fdopen(rfd) as r:
            relay, init = (int(x) for x in r.readline().split())
        assert _wait_until(lambda: len(_descendants(init)) >= 4), "sandbox did not start its sleeps"
        tree_pids = {relay, init} | _descendants(init)
        os.kill(sup, signal.SIGKILL)
        os.waitpid(sup, 0)
        assert _wait_until(lambda: not any(_alive(p) for p in tree_pids)), \
            f"survivors: {[p for p in tree_pids if _alive(p)]}"
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(sup, signal.SIGKILL)
            os.waitpid(sup, 0)


def test_kill_takes_the_whole_tree_down(tree: Tree) -> None:
    sp = tree.launch("sleep 1000 & sleep 1000")
    try:
        sp.start()
        assert _wait_until(lambda: len(_descendants(sp.init_pid)) >= 3)
        pids = {sp.pid, sp.init_pid} | _descendants(sp.init_pid)
        sp.kill()
        assert sp.wait() == 128 + signal.SIGKILL
        assert _wait_until(lambda: not any(_alive(p) for p in pids))
    finally:
        sp.kill()
        sp.close()


# --- the same, unprivileged ------------------------------------------------------------------------------
@pytest.fixture
def nobody_tree() -> Iterator[Tree]:
    if os.geteuid() != 0:
        pytest.skip("dropping to nobody needs root")
    root = Path(tempfile.mkdtemp(prefix="guard-nobody-", dir="/tmp"))
    try:
        tree = make_tree(root)
        for path in [root, *root.rglob("*")]:
            os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
        os.chmod(root, 0o700)
        yield tree
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _as_nobody(fn: Callable[[], None]) -> tuple[int, str]:
    """Run fn in a forked child after a full drop to nobody; its assertion text comes back on a pipe."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(rfd)
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            fn()
        except BaseException as exc:
            os.write(wfd, f"{type(exc).__name__}: {exc}".encode()[:8000])
            code = 1
        os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd) as r:
        text = r.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), text


def test_key_protections_as_nobody(nobody_tree: Tree) -> None:
    problem = namespaces.probe(drop_to=NOBODY)
    if problem is not None:
        pytest.skip(f"unprivileged user namespaces unavailable: {problem}")
    t = nobody_tree
    os.link(t.home / ".ssh" / "id_ed25519", t.ws / "notes.txt")

    def body() -> None:
        assert os.geteuid() == NOBODY
        rc, out = t.run(f"echo ok > {t.ws}/new; echo ws=$?\n"
                        f"echo bad > {t.other}/new; echo other=$?\n"
                        f"cat {t.ws}/.env {t.ws}/notes.txt {t.home}/.ssh/id_ed25519\n"
                        f"ls -A {t.gh}; cat {t.gh}/keys/epoch.key\n"
                        "ls /proc | grep -cE '^[0-9]+$'\n"
                        "ls /sys/class/net\n"
                        "grep NoNewPrivs /proc/self/status\n"
                        "id -u")
        assert rc == 0, out
        assert "ws=0" in out and "other=0" not in out, out
        for secret in ("hunter2", "PRIVATE KEY", "GUARD KEY", "\nkeys\n"):
            assert secret not in out, out
        assert f"\n{NOBODY}" in out, out
        assert out.count("\nlo\n") == 1, out
        assert not (t.other / "new").exists()

    code, text = _as_nobody(body)
    assert code == 0, text


def test_tree_dies_with_the_supervisor_as_nobody(nobody_tree: Tree) -> None:
    problem = namespaces.probe(drop_to=NOBODY)
    if problem is not None:
        pytest.skip(f"unprivileged user namespaces unavailable: {problem}")
    t = nobody_tree
    rfd, wfd = os.pipe()
    sup = os.fork()
    if sup == 0:
        try:
            os.close(rfd)
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            sp = t.launch("sleep 1000 & sleep 1000")
            sp.start()
            os.write(wfd, f"{sp.pid} {sp.init_pid}\n".encode())
            time.sleep(1000)
        except BaseException as exc:
            sys.stderr.write(f"supervisor stand-in failed: {exc}\n")
        finally:
            os._exit(1)
    os.close(wfd)
    try:
        with os.fdopen(rfd) as r:
            line = r.readline()
        assert line, "the unprivileged supervisor failed to spawn"
        relay, init = (int(x) for x in line.split())
        assert _wait_until(lambda: len(_descendants(init)) >= 3)
        pids = {relay, init} | _descendants(init)
        os.kill(sup, signal.SIGKILL)
        os.waitpid(sup, 0)
        assert _wait_until(lambda: not any(_alive(p) for p in pids)), \
            f"survivors: {[p for p in pids if _alive(p)]}"
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(sup, signal.SIGKILL)
            os.waitpid(sup, 0)


# --- with the real seccomp filter and supervisor (skipped until guard.sandbox.seccomp is importable) ----
def _spawn_with(tree: Tree, script: str, spec: object) -> SandboxedProcess:
    pol = tree.policy()
    facts = scan_launch_facts(pol, workspace=tree.ws, protected=[tree.gh], home=tree.home)
    plan = build_plan(pol, facts, workspace=tree.ws, protected=[tree.gh], abi=ABI)
    return spawn(plan, ["/bin/sh", "-c", f"exec >{tree.ws}/out.txt 2>&1\n{script}"], env=ENV, cwd=tree.ws,
                 seccomp=spec)  # type: ignore[arg-type]


def test_seccomp_filter_is_installed_last_and_the_agent_still_runs(tree: Tree) -> None:
    seccomp = pytest.importorskip("guard.sandbox.seccomp")
    sp = _spawn_with(tree, "grep -E '^(Seccomp|NoNewPrivs)' /proc/self/status; echo done",
                     seccomp.SeccompSpec(notify=False))
    try:
        assert sp.listener_fd is None
        assert sp.report.get("syscall filter (seccomp)").state.value == "fully"
        assert sp.report.get("decision tier (seccomp user notification)").state.value == "not"
        sp.start()
        assert sp.wait() == 0
    finally:
        sp.kill()
        sp.close()
    out = (tree.ws / "out.txt").read_text()
    assert "Seccomp:\t2" in out and "done" in out, out


def test_first_exec_waits_for_the_supervisor(tree: Tree) -> None:
    import threading

    seccomp = pytest.importorskip("guard.sandbox.seccomp")
    supervisor_mod = pytest.importorskip("guard.sandbox.supervisor")
    from guard.model import Action, Decision

    seen: list[tuple[Action, Decision]] = []

    def decide(action: Action) -> Decision:
        if action.op is Op.RUN and action.argv and action.argv[0] == "/bin/echo":
            return Decision(Verdict.DENY, "test", "denied by the test")
        return Decision(Verdict.ALLOW, "test", "allowed by the test")

    sp = _spawn_with(tree, "echo inside; /bin/echo forbidden-marker; echo rc=$?", seccomp.SeccompSpec())
    stop = threading.Event()
    try:
        assert sp.listener_fd is not None
        sup = supervisor_mod.Supervisor(sp.listener_fd, decide=decide, record=lambda a, d: seen.append((a, d)))
        thread = threading.Thread(target=sup.serve_forever, args=(stop,), daemon=True)
        thread.start()
        sp.start()
        rc = sp.wait()
        assert rc == 0, seen
    finally:
        stop.set()
        sp.kill()
        sp.close()
    out = (tree.ws / "out.txt").read_text()
    # the agent's own execve of /bin/sh was decided: the supervisor was serving before the first exec
    assert any(a.op is Op.RUN and a.argv and a.argv[0] == "/bin/sh" for a, _ in seen), seen
    assert "inside" in out and "forbidden-marker" not in out, out
    assert "rc=0" not in out  # the denied exec failed inside the sandbox


# --- guard doctor on this host -----------------------------------------------------------------------------
def test_doctor_reports_this_host() -> None:
    import json

    from click.testing import CliRunner

    from guard.cli.main import main

    result = CliRunner().invoke(main, ["doctor", "--json"])
    data = json.loads(result.output)
    assert data["host"]["landlock_abi"] == ABI
    assert data["host"]["userns_problem"] is None  # the module-level probe succeeded, or we were skipped
    assert result.exit_code == (1 if data["missing"] else 0)
    names = {p["name"] for p in data["protections"]}
    assert "decision tier (seccomp user notification)" in names
    text = CliRunner().invoke(main, ["doctor"])
    assert f"Landlock ABI {ABI}" in text.output and "overall:" in text.output


# --- the shipped default policy, end to end ----------------------------------------------------------------
def test_default_policy_runs_honest_work_and_hides_secrets(private_tmp: Path, isolated_home: Path) -> None:
    policy_mod = pytest.importorskip("guard.policy")
    if not shutil.which("git") or not Path("/usr/bin/python3").exists():
        pytest.skip("needs git and /usr/bin/python3")
    ws = private_tmp / "project"
    ws.mkdir()
    (ws / ".env").write_text("API_KEY=topsecret\n")
    (ws / "main.py").write_text("import json, os\nprint(json.dumps({'cwd': os.getcwd()}))\n")
    (isolated_home / ".ssh").mkdir()
    (isolated_home / ".ssh" / "id_rsa").write_text("PRIVATE\n")
    (isolated_home / ".gitconfig").write_text("[user]\n\tname = t\n\temail = t@example.com\n")
    gh = Path(os.environ["GUARD_HOME"])
    gh.mkdir(parents=True)
    (gh / "key").write_text("GUARD KEY\n")
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    # a hook that exists at launch is write-protected by the kernel tier (a read-only mount); creating a new
    # one is refused by the decision tier, which this kernel-only test does not run
    (ws / ".git" / "hooks" / "pre-commit").write_text("#!/bin/sh\necho trusted\n")
    pol = policy_mod.load_policy("coding-agent", workspace=ws)
    protected = (gh, *pol.sources)
    facts = scan_launch_facts(pol, workspace=ws, protected=protected)
    plan = build_plan(pol, facts, workspace=ws, protected=protected, abi=ABI)
    script = (f"exec >{ws}/out.txt 2>&1\n"
              "git add main.py && git commit -qm init && echo git-ok\n"
              "/usr/bin/python3 main.py\n"
              f"cat .env {isolated_home}/.ssh/id_rsa {gh}/key\n"
              f"echo x > .git/hooks/pre-commit; echo hook=$?\n"
              f"cat {policy_mod.shipped_policy_path('coding-agent')}; echo policy=$?\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(isolated_home), "LC_ALL": "C"}
    sp = spawn(plan, ["/bin/sh", "-c", script], env=env, cwd=ws, seccomp=None)
    try:
        sp.start()
        assert sp.wait() == 0
    finally:
        sp.kill()
        sp.close()
    out = (ws / "out.txt").read_text()
    assert "git-ok" in out and '"cwd"' in out, out
    policy_text = policy_mod.shipped_policy_path("coding-agent").read_text().splitlines()[0]
    for secret in ("topsecret", "PRIVATE", "GUARD KEY", policy_text):
        assert secret not in out, out
    assert "hook=0" not in out
    assert (ws / ".git" / "hooks" / "pre-commit").read_text() == "#!/bin/sh\necho trusted\n"


# --- excepts holding other grants, and code from writable trees (escape-suite findings) -----------------
def _carve_policy(tree: Tree, *extra: Rule) -> Pol:
    rw, rwx = frozenset({Op.READ, Op.WRITE}), frozenset({Op.READ, Op.WRITE, Op.EXEC})
    return Pol((Rule("system", Verdict.ALLOW, frozenset({Op.READ, Op.EXEC}), SYSTEM),
                Rule("devnull", Verdict.ALLOW, rw, ("/dev/null",)),
                Rule("scratch", Verdict.ALLOW, rw, (f"{tree.root}/**",), excepts=(f"{tree.home}/**",)),
                Rule("cfg", Verdict.ALLOW, frozenset({Op.READ}), (f"{tree.home}/.gitconfig",
                                                                   f"{tree.home}/.config/tool/**")),
                Rule("cache", Verdict.ALLOW, rwx, (f"{tree.home}/.cache/**",)),
                Rule("ws", Verdict.ALLOW, rwx, (f"{tree.ws}/**",)),
                Rule("ssh", Verdict.DENY, rw, (f"{tree.home}/.ssh/**",)),
                Rule("env", Verdict.DENY, rw, ("/**/.env",)), *extra))


def test_an_except_holding_other_grants_hides_everything_else(tree: Tree) -> None:
    home = tree.home
    (home / "Documents").mkdir()
    (home / "Documents" / "taxes.txt").write_text("TAXES\n")
    (home / ".cache" / "pip").mkdir(parents=True)
    (home / ".cache" / "pip" / "token").write_text("CACHE-TOKEN\n")
    (home / "real-tool").mkdir()
    (home / "real-tool" / "conf").write_text("TOOLCONF\n")
    (home / ".config").mkdir()
    (home / ".config" / "tool").symlink_to("../real-tool")
    _, out = tree.run(f"cat {home}/Documents/taxes.txt; ls -A {home}; cat {home}/.gitconfig; "
                      f"echo x >> {home}/.gitconfig || echo cfg-ro; echo c > {home}/.cache/pip/new && "
                      f"echo cache-rw; cat {home}/.cache/pip/token; cat {home}/.ssh/id_ed25519; "
                      f"cat {home}/.config/tool/conf; touch {home}/planted || echo home-ro",
                      policy=_carve_policy(tree, Rule("token", Verdict.DENY, frozenset({Op.READ}),
                                                      (f"{home}/.cache/pip/token",))))
    # the deny inside a grant put back still applies (its mask comes after the carve)
    assert "TAXES" not in out and "PRIVATE KEY" not in out and "CACHE-TOKEN" not in out, out
    # the carved home is search-only, as Landlock refuses listing a home it does not grant: no name leaks
    # (what is not put back is a placeholder: a mode-0 file, or an empty search-only directory)
    assert f"ls: cannot open directory '{home}': Permission denied" in out, out
    assert "cfg-ro" in out and "cache-rw" in out and "TOOLCONF" in out and "home-ro" in out, out
    assert (home / ".cache" / "pip" / "new").read_text() == "c\n"
    assert (home / ".gitconfig").read_text() == "[user]\n" and not (home / "planted").exists()


def _loader() -> str:
    for p in ("/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"):
        if os.path.exists(p):
            return p
    pytest.skip("no dynamic loader at a known path")


def test_code_written_to_a_non_exec_tree_cannot_be_mapped_executable(tree: Tree) -> None:
    loader = _loader()
    # ws is read/write but not exec in the tree's default policy; `other` is granted nothing
    rc, out = tree.run(f"cp /bin/echo {tree.ws}/copied && {loader} {tree.ws}/copied MAPPED-OK; "
                       f"echo rc=$?")
    assert "MAPPED-OK" not in out and "rc=0" not in out, out
    rc, out = tree.run(f"cp /bin/echo {tree.ws}/copied2 && {loader} {tree.ws}/copied2 MAPPED-OK",
                       policy=_carve_policy(tree))  # ws grants exec here: still runs, inside a noexec root
    assert rc == 0 and "MAPPED-OK" in out, out
    rc, out = tree.run(f"cp /bin/echo {tree.root}/other/c3 && {loader} {tree.root}/other/c3 MAPPED-OK; "
                       f"echo rc=$?", policy=_carve_policy(tree))
    assert "MAPPED-OK" not in out and "rc=0" not in out, out


def test_memfd_noexec_is_raised_in_the_sandbox(tree: Tree) -> None:
    if not os.path.exists("/proc/sys/vm/memfd_noexec"):
        pytest.skip("vm.memfd_noexec needs Linux 6.3")
    sp = tree.launch("cat /proc/sys/vm/memfd_noexec")
    try:
        prot = sp.report.get("exec: anonymous files (memfd) never executable")
        sp.start()
        sp.wait()
    finally:
        sp.kill()
        sp.close()
    out = (tree.ws / "out.txt").read_text()
    if prot.state is State.FULLY:
        assert out.strip() == "2", out
    else:
        assert "memfd_noexec" in prot.reason


def test_carve_and_noexec_as_nobody(nobody_tree: Tree) -> None:
    problem = namespaces.probe(drop_to=NOBODY)
    if problem is not None:
        pytest.skip(f"unprivileged user namespaces unavailable: {problem}")
    t = nobody_tree
    loader = _loader()
    for d in (t.home / "Documents", t.home / ".cache"):
        d.mkdir()
        os.chown(d, NOBODY, NOBODY)
    (t.home / "Documents" / "taxes.txt").write_text("TAXES\n")

    def body() -> None:
        _, out = t.run(f"cat {t.home}/Documents/taxes.txt; cat {t.home}/.gitconfig; "
                       f"echo c > {t.home}/.cache/new && echo cache-rw; "
                       f"cp /bin/echo {t.other}/e && {loader} {t.other}/e MAPPED-OK; "
                       f"cp /bin/echo {t.ws}/e && {loader} {t.ws}/e WS-RUNS", policy=_carve_policy(t))
        assert "TAXES" not in out and "[user]" in out and "cache-rw" in out, out
        assert "MAPPED-OK" not in out and "WS-RUNS" in out, out

    code, text = _as_nobody(body)
    assert code == 0, text


# --- listen rules: the kernel's TCP bind allowlist ---------------------------------------------------------
BIND_SCRIPT = """
import errno, socket, sys
for port in map(int, sys.argv[1:]):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        print(port, "bound", s.getsockname()[1] > 0)
    except OSError as exc:
        print(port, errno.errorcode[exc.errno])
    finally:
        s.close()
"""


def test_listen_rules_are_a_tcp_bind_allowlist(tree: Tree) -> None:
    if ABI < 4:
        pytest.skip(f"Landlock TCP rules need ABI 4, host has {ABI}")
    from guard.policy import load_policy

    lines = [f"    paths: [{', '.join(repr(p) for p in SYSTEM)}]"]
    text = "\n".join([
        "version: 1", "defaults: {file: deny, network: deny, process: allow}", "rules:",
        "  - id: system", "    allow: [read, exec]", *lines,
        "  - id: ws", "    allow: [read, write]", f"    paths: ['{tree.ws}/**', /dev/null]",
        "  - id: dev-server", "    allow: [listen]", "    hosts: [127.0.0.1]", "    ports: [18080, 18090-18091]",
        "  - id: not-18091", "    deny: [listen]", "    hosts: ['*']", "    ports: [18091]", ""])
    (tree.root / "listen.yaml").write_text(text)
    pol = load_policy(tree.root / "listen.yaml", workspace=tree.ws, home=tree.home)
    facts = scan_launch_facts(pol, workspace=tree.ws, protected=[tree.gh], home=tree.home)
    plan = build_plan(pol, facts, workspace=tree.ws, protected=[tree.gh], abi=ABI)
    assert plan.landlock.bind_ports == (0, 18080, 18090)
    assert plan.report.get("network: listen ports (Landlock TCP bind)").state is State.FULLY
    out = tree.ws / "out.txt"
    sp = spawn(plan, ["/bin/sh", "-c", f'exec >{out} 2>&1\nexec /usr/bin/python3 -c "$0" "$@"', BIND_SCRIPT,
                      "18080", "18090", "18081", "18091", "3128", "0"],
               env=ENV, cwd=tree.ws, seccomp=None, inner_listen_ports=())
    try:
        sp.start()
        assert sp.wait() == 0, out.read_text()
    finally:
        sp.kill()
        sp.close()
    got = dict(line.split(" ", 1) for line in out.read_text().splitlines())
    assert got == {"18080": "bound True", "18090": "bound True", "18081": "EACCES", "18091": "EACCES",
                   "3128": "EACCES", "0": "bound True"}, got
