"""One guarded session: the imperative shell that wires the layers together for `guard run`.

Order matters and is the whole point of this module:
  1. load the policy (pure) and open a session with the daemon (which records, and holds `ask`s for a
     human);
  2. scan what exists at launch and build the kernel plan (pure) — refuse if `--require-full` and the host
     cannot enforce everything the policy needs;
  3. spawn the sandbox; serve its seccomp notifications and its netns loopback listener (the proxy) from
     threads of this process, every action decided by the session's Decider (guard.session) with the
     same policy, and the host ports of `--publish` (each connection made inside by the sandbox's init);
  4. wait (SIGTERM/SIGHUP are passed to the agent, which gets a grace period before the tree is killed),
     end the session through its spool (guard.session.Recorder), and exit with the command's own status.
If anything before the command starts fails, we raise SandboxError (exit 125): never an unguarded run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from guard import dataclass_code
from guard.errors import GuardError, SandboxError
from guard.home import guard_home
from guard.model import Action, Decision
from guard.session import Decider, Recorder, RecordingLimits, Tally, decision_record
from guard.spool import SpoolWriter
from guard.text import shown_text

if TYPE_CHECKING:
    from guard.policy.engine import Policy

# The loopback port inside the sandbox's network namespace where the proxy answers.
PROXY_PORT = 3128
SUPERVISOR_WORKERS = 4
TERM_GRACE_S = 5.0  # after SIGTERM/SIGHUP, how long the agent may clean up before its tree is killed


@dataclass(frozen=True)
class RunOptions:
    """What `guard run` was asked to do."""

    argv: tuple[str, ...]
    policy: str = "coding-agent"
    workspace: Path = field(default_factory=Path.cwd)
    cwd: Path = field(default_factory=Path.cwd)
    require_full: bool = False
    audit: bool = False  # the policy in audit mode: decide and record, refuse nothing (but guard's own state)
    full_audit: bool = False  # also decide and record every read-only open (SeccompSpec.full_audit)
    json_summary: bool = False
    resolve: Mapping[str, str] = field(default_factory=dict)
    publish: tuple[int, ...] = ()  # host 127.0.0.1:PORT -> the sandbox's 127.0.0.1:PORT
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


@dataclass(frozen=True)
class RunResult:
    """How a guarded session ended: the command's status, its session id and what was decided."""

    status: int
    session: str
    summary: Mapping[str, int]


def agent_env(base: Mapping[str, str], proxy_port: int,
              pass_env: Sequence[str] = ()) -> tuple[dict[str, str], list[str]]:
    """The environment the agent sees: the caller's, minus credentials and variables pointing at sockets
    outside (guard.sandbox.env; `settings.pass_env` lets named credentials through), plus the proxy
    settings, the agent hooks' channel and a marker; and the files the withheld credential variables name
    (hidden too)."""
    from guard.integrations.channel import HOOK_PATH
    from guard.net.proxy_env import agent_proxy_env
    from guard.sandbox.env import agent_env as filtered
    from guard.sandbox.env import named_files

    user_no_proxy = base.get("NO_PROXY") or base.get("no_proxy")  # its loopback entries are kept
    env, withheld = filtered(base, pass_env=pass_env,
                             extra={**agent_proxy_env(proxy_port, user_no_proxy=user_no_proxy),
                                    "GUARD_SANDBOX": "1",
                                    "GUARD_HOOK_URL": f"http://127.0.0.1:{proxy_port}{HOOK_PATH}"})
    return env, named_files(withheld, base)


_ENV_REFERENCE = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


def policy_environment(sources: Sequence[Path], env: Mapping[str, str]) -> dict[str, str]:
    """The caller's values of every variable the policy reads, for the daemon to compile the same policy.

    The daemon was started by some earlier command with its own environment; without these, `~` or
    `${env:NAME}` could mean one thing in the kernel plan and another in the daemon's decisions.
    """
    names = {"HOME", "TMPDIR"}
    for source in sources:
        names.update(_ENV_REFERENCE.findall(source.read_text(encoding="utf-8", errors="replace")))
    return {name: env[name] for name in sorted(names) if name in env}


def policy_ref(ref: str) -> str:
    """A policy name as is; a policy file as an absolute path (the daemon's cwd is not ours)."""
    from guard.policy.refs import is_policy_name

    return ref if is_policy_name(ref) else str(Path(ref).resolve())


def run_guarded(opts: RunOptions, *, out: Callable[[str], None] | None = None) -> RunResult:
    """Run `opts.argv` under the guard; the status is the command's own (125: the guard could not start)."""
    collecting = gc.isenabled()
    gc.disable()  # the launch allocates much and frees little: the collector's passes were ~5% of it
    try:
        return _run_guarded(opts, out, collecting)
    finally:
        if collecting:
            gc.enable()


def _run_guarded(opts: RunOptions, out: Callable[[str], None] | None, collecting: bool) -> RunResult:
    from guard.announce import AskAnnouncer
    from guard.daemon.client import DaemonClient
    from guard.integrations.channel import HookChannel
    from guard.model import Op
    from guard.net import policy_cidr_grant
    from guard.net.forward import ForwardThread, granted_loopback_ports, loopback_warnings
    from guard.net.threads import ProxyThread, PublishThread, open_published_ports
    from guard.policy_cache import load_policy_cached
    from guard.sandbox import landlock
    from guard.sandbox.audit_mode import enforce_kernel_state
    from guard.sandbox.config_watch import ConfigWatch
    from guard.sandbox.fastpath import FastPath
    from guard.sandbox.git_launch import launch_policy as launch_git_policy
    from guard.sandbox.launch import spawn
    from guard.sandbox.link_names import LinkNames
    from guard.sandbox.plan import build_plan
    from guard.sandbox.scan import LaunchFacts, scan_launch_facts
    from guard.sandbox.seccomp import SeccompSpec
    from guard.sandbox.state_dirs import create_state_dirs
    from guard.sandbox.state_dirs import describe as describe_state_dirs
    from guard.sandbox.supervisor import Supervisor
    from guard.sandbox.tool_env import tool_env

    dataclass_code.save()  # the run path's imports are done: keep what they compiled (first run only)
    emit = out or (lambda line: print(line, file=sys.stderr))

    def say(line: str) -> None:  # messages quote the agent's paths and commands: escaped (guard.text)
        emit(shown_text(line))

    if not opts.argv:
        raise SandboxError("no command given", hint="guard run -- COMMAND [ARGS...]")
    home = guard_home(opts.env)
    workspace = opts.workspace.resolve()
    _refuse_broad_workspace(workspace, opts.env)
    try:
        policy = load_policy_cached(opts.policy, workspace=workspace, env=opts.env, home=home)
    except GuardError as exc:  # no policy, no sandbox: 125, with the file:line:col diagnostics intact
        raise SandboxError(f"policy {opts.policy!r} could not be loaded, nothing was started:\n"
                           f"{exc.diagnostics()}") from exc
    if opts.audit:
        policy.mode = "audit"  # before any decision: the engine reads it at every decide

    limits = RecordingLimits.from_env(opts.env)
    try:
        client = DaemonClient.ensure_running(home)
    except GuardError as exc:
        raise SandboxError(f"the guard daemon could not be reached: {exc.message}",
                           hint="see `guard daemon status`; the command was not started") from exc
    session_fields: dict[str, Any] = {
        "policy": policy_ref(opts.policy), "workspace": str(workspace), "argv": list(opts.argv),
        "cwd": str(opts.cwd), "pid": os.getpid(), "env": policy_environment(policy.sources, opts.env)}
    # The daemon compiles the policy and writes the session's start record while we look at the host: the
    # two overlap (a thread waiting on the daemon's socket), and the sandbox is spawned only once both are
    # done, so the start record still precedes everything the agent does.
    opening = _Background(lambda: _open_session(client, session_fields, home))
    protected = (home, *policy.sources)
    prepared: BaseException | None = None
    link_names: LinkNames | None = None
    try:
        created = create_state_dirs(policy, Path(policy.home))  # before the scan: Landlock needs them
        env, credential_files = agent_env(opts.env, PROXY_PORT, policy.pass_env)
        hideable = _hideable(credential_files, workspace, opts.env)

        def scan(under: Policy) -> LaunchFacts:
            return scan_launch_facts(under, workspace=workspace, protected=protected,
                                     max_entries=under.scan_max_entries, credential_files=hideable,
                                     unhunted=[home / "layers"])

        # git's include targets and the workspace's bare repositories become rules of their own, and the
        # facts are those of the policy with them (guard.sandbox.git_launch)
        policy, facts, bare = launch_git_policy(policy, workspace=os.path.realpath(workspace), env=opts.env,
                                                scan=scan)
        if bare:
            facts = dataclasses.replace(facts, held_names=tuple(bare))
        # only writes need the map of protected symlinks, and none can happen before the agent runs: it
        # is walked beside the start, and every write waits for it whole (guard.sandbox.link_names)
        link_names = LinkNames.walking((m.path for m in facts.matches if Op.WRITE in m.ops),
                                       skip=(str(workspace),))
    except BaseException as exc:  # raised below, inside the session: it ends with a record, exit 125
        prepared = exc
    session_id, spool = opening.result()

    def reconnect() -> DaemonClient:
        """A new connection that resumes this session (starting a daemon if none answers)."""
        fresh = DaemonClient.ensure_running(home, wait=limits.request_timeout, timeout=limits.request_timeout)
        try:
            fresh.request("session.open", {**session_fields, "resume": session_id})
        except BaseException:
            fresh.close()
            raise
        return fresh

    recorder = Recorder(spool, session_id, client, reconnect, limits=limits, warn=say)
    tally = Tally()
    status = 125
    ending: tuple[str, str | None] = ("closed", None)
    announcer = AskAnnouncer(home, session_id, opts.env, say)
    announcer.start()
    watch: ConfigWatch | None = None
    mask_server: Any = None  # guard.sandbox.fuse_mask.MaskServer
    try:
        if prepared is not None:
            raise prepared
        if link_names is None:  # made by the preparation that just succeeded; never decide without it
            raise SandboxError("guard run: the walk for protected symlinks was not started")
        if created:
            say(f"guard: {describe_state_dirs(created)}")
        layers = _private_layers(home, session_id)
        # the supervisor decides every write (SeccompSpec(notify=True) below): asks need no read-only mount
        plan = build_plan(policy, facts, workspace=workspace, protected=protected, abi=landlock.abi(),
                          private_root=str(layers), decided_asks=True)
        report = plan.report
        if opts.require_full and not report.fully_enforced:
            raise SandboxError(f"--require-full: this host cannot enforce everything: {report.summary()}",
                               hint="run `guard doctor` to see what is missing")
        for warning in report.warnings():
            say(f"guard: warning: {warning}")
        if plan.audit:
            say(f"guard: audit mode ({policy.name}): actions are decided and recorded, not refused; still "
                "refused: the guard's own state, writes to /proc, /sys and /dev, the kernel surfaces of the "
                "syscall filter")

        decider = Decider(policy, recorder, session_id, tally, warn=say,
                          existed_at_launch=[m.path for m in facts.matches
                                             if m.rule_id in policy.existing_only_rules],
                          workspace=os.path.realpath(workspace))
        hooks = HookChannel(decider.check, decider.record_event)
        # audit mode lets writes through, but never to /proc, /sys and /dev (guard.sandbox.audit_mode)
        base_decide = enforce_kernel_state(decider.decide, decider.check) if plan.audit else decider.decide

        def decide(action: Action) -> Decision:
            if watch is not None:  # a write of agent config whose new content is being decided
                action = watch.redirect(action)
            decision = base_decide(action)
            hooks.note(action, decision)  # so a post-tool hook can tell the model what was refused
            return decision

        # in-place writes of agent config that starts programs, judged on content (sandbox.config_watch)
        watch = ConfigWatch.for_policy(policy.home, decider.check, decide, say)
        if watch is not None:
            watch.start()

        published = open_published_ports(opts.publish, decide)
        cidr_grant = policy_cidr_grant(policy)
        forwards = granted_loopback_ports(policy, cidr_grant, skip=(PROXY_PORT,))
        for line in loopback_warnings(opts.env, forwards, (PROXY_PORT,)):
            say(f"guard: warning: {line}")
        spec = SeccompSpec(notify=True, full_audit=opts.full_audit)
        try:
            env = {**env, **tool_env(policy, workspace, opts.env, euid=os.geteuid())}
            proc = spawn(plan, opts.argv, env=env, cwd=opts.cwd,
                         seccomp=spec, inner_listen_ports=(PROXY_PORT, *forwards),
                         publish_ports=tuple(published))
        except SandboxError as exc:
            for host_sock, _ in published.values():
                host_sock.close()
            raise SandboxError(exc.message, hint=_host_remedy(exc.hint)) from exc
        except BaseException:
            for host_sock, _ in published.values():
                host_sock.close()
            raise
        recorder.attach(_AgentTree(proc))
        stop = threading.Event()
        threads: list[threading.Thread] = []
        mask_server = proc.serve_masks(decide)  # read-denied names under FUSE masks: each attempt recorded
        if proc.listener_fd is not None:
            # The decider records every decision; several workers so one pending `ask` does not stall the
            # rest of the agent's tree (the decider and the daemon client are thread-safe).
            # audit mode decides through enforce_kernel_state: it stays on the general path
            fast = None if plan.audit else FastPath.create(
                proc.listener_fd, spec, policy=policy, probe=decider.uniform, spool=spool,
                record_of=decision_record, link_names=link_names)
            if fast is not None:
                tally.fast_allowed = fast.allowed
                recorder.watch_fast_appends()
            supervisor = Supervisor(proc.listener_fd, decide=decide, record=decider.record_refusal,
                                    check=decider.check, sockets=decider.grants_socket, spec=spec,
                                    workers=SUPERVISOR_WORKERS, link_names=link_names, fast=fast)
            threads.append(threading.Thread(target=supervisor.serve_forever, args=(stop,),
                                            name="guard-supervisor", daemon=True))
        net = ProxyThread(proc.inner_listeners[:1], host_map={**dict(policy.host_map), **opts.resolve},
                          cidr_grant=cidr_grant, decide=decide, record=decider.record_event,
                          hooks=hooks.handle, refused=decider.refuse)
        threads.append(net.thread)
        forwarder: ForwardThread | None = None
        if forwards:
            forwarder = ForwardThread(dict(zip(forwards, proc.inner_listeners[1:], strict=True)),
                                      decide=decide, record=decider.record_event, refused=decider.refuse)
            threads.append(forwarder.thread)
        publisher: PublishThread | None = None
        if published:
            publisher = PublishThread(published, proc.connect_inner, decider.record_event)
            threads.append(publisher.thread)
        for t in threads:
            t.start()

        def release() -> None:
            proc.release()
            if collecting:
                # The session may last hours: its garbage is collected as usual. What the launch made stays
                # for the session (modules, the policy, the plan): frozen, the collector never walks it.
                # Left in the youngest generation, the first pass walked all of it (~5 ms, holding the
                # interpreter's lock) just as the supervisor answered the agent's first exec.
                gc.freeze()
                gc.enable()

        status, signalled = _wait_forwarding_signals(proc, release)
        link_names.cancel()  # the tree is gone: nothing is left to decide, a walk still going may stop
        if signalled is not None:
            ending = ("terminated", f"guard run received {signal.Signals(signalled).name}: passed to the "
                                    f"agent, the tree killed after {TERM_GRACE_S:g} s if still running")
        stop.set()
        if mask_server is not None:
            mask_server.stop()
        net.stop()
        if forwarder is not None:
            forwarder.stop()
        if publisher is not None:
            publisher.stop()
        for t in threads:
            t.join(timeout=2)
        if os.environ.get("GUARD_SUPERVISOR_STATS") == "1" and proc.listener_fd is not None:
            fast_counts = fast.core.counts() if fast is not None else {}
            by_name = ", ".join(f"{k} {v}" for k, v in supervisor.handled_by.most_common())
            say(f"guard: supervisor: {supervisor.handled} answered in Python ({by_name}); "
                f"core: {fast_counts}")
        if watch is not None:
            watch.stop()
            watch = None
    finally:
        if link_names is not None:
            link_names.cancel()  # a walk still going has nothing left to serve
        if mask_server is not None:
            mask_server.stop()
        if watch is not None:
            watch.stop()
        announcer.stop()
        # rmdir of directories an overlay has just released takes ~1.5 ms each: done beside the session's end
        remover = _Background(lambda: _remove_private_layers(home, session_id), name="guard-layers-rm")
        summary = tally.as_dict()
        # every record reaches the trail before the session's end record; if the daemon cannot take them,
        # the spool keeps them (with the end) for the next daemon to ingest
        try:
            problem = recorder.close(exit_status=status, summary=summary, status=ending[0], reason=ending[1])
        finally:
            remover.result()
        if problem is not None:
            say(f"guard: could not close the session with the daemon ({problem}); its records are kept "
                f"in {spool.path}; the daemon records them when it answers again, or at its next start")
    _print_summary(say, session_id, status, summary, opts.json_summary)
    return RunResult(status=status, session=session_id, summary=summary)


def _open_session(client: Any, fields: Mapping[str, Any], home: Path) -> tuple[str, SpoolWriter]:
    """Open the session with the daemon and its spool; -> (session id, spool). When the daemon cannot take
    spools, the session is closed again (exit 125) and SandboxError says why: nothing was started."""
    session = client.open_session(**fields)
    session_id: str = session["session"]
    spool: SpoolWriter | None = None
    try:
        spool = SpoolWriter.create(home, session_id)
        client.request("spool.ingest", {"session": session_id})  # a daemon that cannot take spools says so
    except GuardError as exc:
        if spool is not None:  # empty: nothing to keep
            spool.close()
            with contextlib.suppress(OSError):
                spool.path.unlink()
        with contextlib.suppress(GuardError):
            client.close_session(session_id, exit_status=125, summary={})
        client.close()
        hint = ("the running daemon is older than this guard: restart it (`guard daemon stop`; the next "
                "`guard run` starts the new one)" if getattr(exc, "code", None) == "unknown_op" else exc.hint)
        raise SandboxError(f"nothing was started: {exc.message}", hint=hint) from exc
    return session_id, spool


class _Background:
    """Run one call in a thread now; `result()` joins it and returns its value or raises its exception.
    Joined before the sandbox is forked (the sandbox is never forked while one runs) and before exit."""

    def __init__(self, call: Callable[[], Any], name: str = "guard-session-open") -> None:
        self._value: Any = None
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._value = call()
            except BaseException as exc:  # handed to the caller by result()
                self._error = exc

        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def _host_remedy(hint: str | None) -> str:
    """When the sandbox cannot be built, name this host's fix (guard doctor's remedies) beside the error."""
    from guard.sandbox.remedies import read_settings, remedies
    from guard.sandbox.report import probe_host

    try:
        fixes = remedies(probe_host(), read_settings())
    except (OSError, GuardError):
        fixes = []
    parts = [hint] if hint else []
    parts += [f"to fix: {fix}" for fix in fixes[:3]]
    parts.append("`guard doctor` shows what this host can enforce")
    return "; ".join(parts)


def _hideable(paths: Sequence[str], workspace: Path, env: Mapping[str, str]) -> list[Path]:
    """Files named by withheld credential variables, except a tree holding the workspace or the home
    (a variable whose value is `/` or `$HOME` names no credential file worth hiding everything for)."""
    home = Path(env.get("HOME") or Path.home()).resolve()
    out: list[Path] = []
    for text in paths:
        path = Path(text).resolve()
        if workspace.is_relative_to(path) or home.is_relative_to(path):
            continue
        out.append(path)
    return out


def _private_layers(home: Path, session_id: str) -> Path:
    """The session's own directory for the layers of `writes: private` rules (the engineer's caches seen
    through an overlay): inside the guard's state, which every sandbox hides, and removed at the end.
    Layers left by a `guard run` that was killed (its pid gone) are removed here."""
    layers = home / "layers"
    layers.mkdir(parents=True, mode=0o700, exist_ok=True)
    for old in layers.iterdir():
        try:
            pid = int((old / "pid").read_text())
        except (OSError, ValueError):
            continue  # still being set up, or not ours to judge
        if not _alive(pid):
            _remove_private_layers(home, old.name)
    root = layers / session_id
    root.mkdir(mode=0o700)
    (root / "pid").write_text(str(os.getpid()))
    return root


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence only, nothing is sent
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_private_layers(home: Path, session_id: str) -> None:
    """Remove the session's layers. Overlay leaves its work directory mode 000: it is ours, so every
    directory is made listable before it is walked."""
    import shutil

    root = home / "layers" / session_id
    if not root.exists():
        return
    try:
        for dirpath, dirnames, _ in os.walk(root):
            for name in dirnames:
                with contextlib.suppress(OSError):
                    os.chmod(os.path.join(dirpath, name), 0o700)
        shutil.rmtree(root)
    except OSError as exc:
        print(f"guard: could not remove the session's private layers {root}: {exc}", file=sys.stderr)


def _refuse_broad_workspace(workspace: Path, env: Mapping[str, str]) -> None:
    """A workspace is read/write for the agent: the home directory or / would hand it nearly everything."""
    home = Path(env.get("HOME") or Path.home()).resolve()
    if workspace in (Path("/"), home) or home.is_relative_to(workspace):
        raise SandboxError(f"refusing workspace {workspace}: it contains your home directory, so the agent "
                           "could write nearly everything you can",
                           hint="cd into a project directory, or pass --workspace DIR")


def _wait_forwarding_signals(proc: Any, release: Callable[[], None] = lambda: None,
                             grace: float = TERM_GRACE_S) -> tuple[int, int | None]:
    """Release the agent (`release`) and wait for the sandbox; -> (status, the terminating signal guard run
    received, if any). The handlers are in place before the agent runs: a Ctrl-C typed as soon as it
    prints must not find guard run still taking SIGINT (it died of KeyboardInterrupt, the agent orphaned).

    Ctrl-C belongs to the agent (its process group). SIGTERM/SIGHUP are passed on to the agent (the relay
    forwards them to the sandbox's init, which forwards them to the agent) so it can clean up; after
    `grace` seconds the whole tree is killed. A second signal kills at once.
    """
    received: list[int] = []
    timers: list[threading.Timer] = []

    def terminate(signum: int, _frame: object) -> None:
        received.append(signum)
        if len(received) > 1:
            proc.kill()
            return
        if proc.pid > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signum)
        timer = threading.Timer(grace, proc.kill)
        timer.daemon = True
        timers.append(timer)
        timer.start()

    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.SIGTERM: signal.signal(signal.SIGTERM, terminate),
        signal.SIGHUP: signal.signal(signal.SIGHUP, terminate),
    }
    try:
        release()
        status = int(proc.wait())
    finally:
        for timer in timers:
            timer.cancel()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return status, (received[0] if received else None)


class _AgentTree:
    """The recorder's hold on the agent: stop (SIGSTOP) every process of the sandbox below its init,
    continue them, or kill the whole tree. Processes are found through /proc's children lists; a process
    that forks while we stop the tree is caught by going round again until no new one appears."""

    def __init__(self, proc: Any) -> None:
        self._proc = proc
        self._stopped: set[int] = set()
        self._lock = threading.Lock()

    def _tree(self) -> list[int]:
        found: list[int] = []
        todo = _children(self._proc.init_pid) if self._proc.init_pid > 0 else []
        while todo:
            pid = todo.pop()
            if pid in found or pid <= 1:
                continue
            found.append(pid)
            todo.extend(_children(pid))
        return found

    def pause(self) -> None:
        with self._lock:
            for _ in range(50):
                fresh = [pid for pid in self._tree() if pid not in self._stopped]
                if not fresh:
                    return
                for pid in fresh:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGSTOP)
                    self._stopped.add(pid)

    def resume(self) -> None:
        with self._lock:
            for pid in self._tree():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            self._stopped.clear()

    def kill(self) -> None:
        self._proc.kill()


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as fh:
                out.extend(int(word) for word in fh.read().split())
        except OSError:
            continue
    return out


def _print_summary(say: Callable[[str], None], session_id: str, status: int, summary: dict[str, int],
                   as_json: bool) -> None:
    if as_json:
        say(json.dumps({"session": session_id, "exit_status": status, **summary}, sort_keys=True))
        return
    denied = summary["denied"]
    tail = f"; see them: guard audit show --session {session_id} --verdict deny" if denied else ""
    say(f"guard: session {session_id} exited {status}: {denied} denied, {summary['allowed']} allowed, "
        f"{summary['execs']} execs, {summary['connections']} connections{tail}")
