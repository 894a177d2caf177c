"""One guarded session: the imperative shell that wires the layers together for `guard run`.

Order matters and is the whole point of this module:
  1. load the policy (pure) and open a session with the daemon (which decides, approves and records);
  2. scan what exists at launch and build the kernel plan (pure) — refuse if `--require-full` and the host
     cannot enforce everything the policy needs;
  3. spawn the sandbox; serve its seccomp notifications (decided by the daemon) and its netns loopback
     listener (relayed through the proxy, decided by the daemon) from threads of this process, and the
     host ports of `--publish` (each connection made inside by the sandbox's init and relayed here);
  4. wait, close the session with a summary, and exit with the command's own status.
If anything before the command starts fails, we raise SandboxError (exit 125): never an unguarded run.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import queue
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from guard.errors import DaemonError, GuardError, SandboxError
from guard.home import guard_home
from guard.model import Action, Decision, Op, Verdict

if TYPE_CHECKING:
    from guard.daemon.client import DaemonClient
    from guard.policy import Policy

# The loopback port inside the sandbox's network namespace where the proxy answers.
PROXY_PORT = 3128
SUPERVISOR_WORKERS = 4
PUBLISH_MAX_CONNECTIONS = 64  # live connections through all published ports; more are refused and recorded


@dataclass(frozen=True)
class RunOptions:
    """What `guard run` was asked to do."""

    argv: tuple[str, ...]
    policy: str = "coding-agent"
    workspace: Path = field(default_factory=Path.cwd)
    cwd: Path = field(default_factory=Path.cwd)
    require_full: bool = False
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


@dataclass
class Tally:
    """Counts what happened in a session, for the one-line summary; updated from several threads."""

    allowed: int = 0
    denied: int = 0
    asked: int = 0
    execs: int = 0
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, action: Action, decision: Decision) -> None:
        with self.lock:
            if decision.enforced is Verdict.DENY:
                self.denied += 1
            else:
                self.allowed += 1
            if decision.verdict is Verdict.ASK:
                self.asked += 1
            if action.op.value == "run":
                self.execs += 1
            if action.op.value == "connect":
                self.connections += 1

    def count_connection(self) -> None:
        with self.lock:
            self.connections += 1

    def as_dict(self) -> dict[str, int]:
        with self.lock:
            return {"allowed": self.allowed, "denied": self.denied, "asked": self.asked,
                    "execs": self.execs, "connections": self.connections}


# Variables that hand the agent a credential by reference: an agent socket signs or decrypts with every key
# it holds (no key file needs reading), a docker socket is root on the host. The sandbox also refuses
# connecting to sockets outside the grants; dropping these keeps honest tools from even trying.
_WITHHELD_ENV = frozenset({
    "GUARD_HOME", "SSH_AUTH_SOCK", "SSH_AGENT_PID", "GPG_AGENT_INFO", "GNOME_KEYRING_CONTROL",
    "DOCKER_HOST", "CONTAINER_HOST", "DBUS_SESSION_BUS_ADDRESS",
})


def agent_env(base: Mapping[str, str], proxy_port: int) -> dict[str, str]:
    """The environment the agent sees: the caller's, minus what points at credentials or at guard's own
    state, plus the proxy settings and a marker."""
    from guard.net.proxy_env import agent_proxy_env

    env = {k: v for k, v in base.items() if k not in _WITHHELD_ENV}
    env.update(agent_proxy_env(proxy_port))
    env["GUARD_SANDBOX"] = "1"
    return env


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
    from guard.policy.loader import is_policy_name

    return ref if is_policy_name(ref) else str(Path(ref).resolve())


def run_guarded(opts: RunOptions, *, out: Callable[[str], None] | None = None) -> RunResult:
    """Run `opts.argv` under the guard; the status is the command's own (125: the guard could not start)."""
    from guard.daemon.client import DaemonClient
    from guard.policy import load_policy
    from guard.sandbox import landlock
    from guard.sandbox.launch import spawn
    from guard.sandbox.plan import build_plan
    from guard.sandbox.scan import scan_launch_facts
    from guard.sandbox.seccomp import SeccompSpec
    from guard.sandbox.supervisor import Supervisor

    say = out or (lambda line: print(line, file=sys.stderr))
    if not opts.argv:
        raise SandboxError("no command given", hint="guard run -- COMMAND [ARGS...]")
    home = guard_home(opts.env)
    workspace = opts.workspace.resolve()
    _refuse_broad_workspace(workspace, opts.env)
    try:
        policy = load_policy(opts.policy, workspace=workspace, env=opts.env)
    except GuardError as exc:  # no policy, no sandbox: 125, with the file:line:col diagnostics intact
        raise SandboxError(f"policy {opts.policy!r} could not be loaded, nothing was started:\n"
                           f"{exc.diagnostics()}") from exc

    try:
        client = DaemonClient.ensure_running(home)
    except GuardError as exc:
        raise SandboxError(f"the guard daemon could not be reached: {exc.message}",
                           hint="see `guard daemon status`; the command was not started") from exc
    session = client.open_session(policy=policy_ref(opts.policy), workspace=str(workspace),
                                  argv=list(opts.argv), cwd=str(opts.cwd), pid=os.getpid(),
                                  env=policy_environment(policy.sources, opts.env))
    session_id: str = session["session"]
    tally = Tally()
    status = 125
    decider: Decider | None = None
    try:
        protected = (home, *policy.sources)
        facts = scan_launch_facts(policy, workspace=workspace, protected=protected,
                                  max_entries=policy.scan_max_entries)
        plan = build_plan(policy, facts, workspace=workspace, protected=protected, abi=landlock.abi())
        report = plan.report
        if opts.require_full and not report.fully_enforced:
            raise SandboxError(f"--require-full: this host cannot enforce everything: {report.summary()}",
                               hint="run `guard doctor` to see what is missing")
        for warning in report.warnings():
            say(f"guard: warning: {warning}")

        decider = Decider(policy, client, session_id, tally, warn=say,
                          existed_at_launch=[m.path for m in facts.matches
                                             if m.rule_id in policy.existing_only_rules])
        published = open_published_ports(opts.publish, decider.decide)
        spec = SeccompSpec(notify=True)
        try:
            proc = spawn(plan, opts.argv, env=agent_env(opts.env, PROXY_PORT), cwd=opts.cwd,
                         seccomp=spec, inner_listen_ports=(PROXY_PORT,),
                         publish_ports=tuple(published))
        except BaseException:
            for host_sock, _ in published.values():
                host_sock.close()
            raise
        decider.on_record_failure(proc.kill)
        stop = threading.Event()
        threads: list[threading.Thread] = []
        if proc.listener_fd is not None:
            # The decider records every decision; several workers so one pending `ask` does not stall the
            # rest of the agent's tree (the decider and the daemon client are thread-safe).
            supervisor = Supervisor(proc.listener_fd, decide=decider.decide, record=decider.record_refusal,
                                    check=decider.check, spec=spec, workers=SUPERVISOR_WORKERS)
            threads.append(threading.Thread(target=supervisor.serve_forever, args=(stop,),
                                            name="guard-supervisor", daemon=True))
        net = _NetworkThread(proc.inner_listeners, client, session_id, policy, dict(opts.resolve),
                             decider.decide)
        threads.append(net.thread)
        publisher: _PublishThread | None = None
        if published:
            recorder = decider

            def record_published(event: dict[str, Any]) -> None:
                tally.count_connection()
                recorder.record_event(event)

            publisher = _PublishThread(published, proc.connect_inner, record_published)
            threads.append(publisher.thread)
        for t in threads:
            t.start()
        proc.release()
        status = _wait_forwarding_signals(proc)
        stop.set()
        net.stop()
        if publisher is not None:
            publisher.stop()
        for t in threads:
            t.join(timeout=2)
    finally:
        if decider is not None:
            decider.close()  # every record reaches the daemon before the session's end record
        summary = tally.as_dict()
        try:
            client.close_session(session_id, exit_status=status, summary=summary)
        except GuardError as exc:
            say(f"guard: could not close the session cleanly: {exc.message}")
        client.close()
    _print_summary(say, session_id, status, summary, opts.json_summary)
    return RunResult(status=status, session=session_id, summary=summary)


def _refuse_broad_workspace(workspace: Path, env: Mapping[str, str]) -> None:
    """A workspace is read/write for the agent: the home directory or / would hand it nearly everything."""
    home = Path(env.get("HOME") or Path.home()).resolve()
    if workspace in (Path("/"), home) or home.is_relative_to(workspace):
        raise SandboxError(f"refusing workspace {workspace}: it contains your home directory, so the agent "
                           "could write nearly everything you can",
                           hint="cd into a project directory, or pass --workspace DIR")


def _wait_forwarding_signals(proc: Any) -> int:
    """Wait for the sandbox. Ctrl-C belongs to the agent (its process group); SIGTERM/SIGHUP kill the tree."""
    def terminate(signum: int, _frame: object) -> None:
        proc.kill()

    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.SIGTERM: signal.signal(signal.SIGTERM, terminate),
        signal.SIGHUP: signal.signal(signal.SIGHUP, terminate),
    }
    try:
        return int(proc.wait())
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class Decider:
    """Decides a session's actions with the policy its sandbox was built from; the daemon records them.

    Allow and deny are decided here (the engine is pure and takes microseconds) and their records are
    streamed to the daemon in batches by one thread, so a notified syscall costs no socket round trip.
    Only `ask` goes to the daemon synchronously: it holds the request for a human and records the answer.
    If the daemon stops accepting records, the sandbox is killed: nothing may act unrecorded.
    """

    BATCH = 500
    LINGER_S = 0.05

    def __init__(self, policy: Policy, client: DaemonClient, session: str, tally: Tally,
                 warn: Callable[[str], None], existed_at_launch: Sequence[str] = ()) -> None:
        self._policy = policy
        # `applies_to: existing` rules protect only what existed when the session started (the engineer's
        # repository config, say), not what the agent creates during it (a repository it clones).
        self._existing_only = policy.existing_only_rules
        self._existed = tuple(existed_at_launch)
        self._client = client
        self._session = session
        self._tally = tally
        self._warn = warn
        self._queue: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._on_failure: Callable[[], None] | None = None
        self._failed: DaemonError | None = None
        self._thread = threading.Thread(target=self._send_loop, name="guard-recorder", daemon=True)
        self._thread.start()

    def record_refusal(self, action: Action, decision: Decision) -> None:
        """The supervisor's record hook: everything decide() returned is already recorded; what the
        supervisor refuses on its own (an exec of a file with no path, a failed decision) is not."""
        from guard.sandbox.supervisor import SUPERVISOR_RULE

        if decision.rule_id == SUPERVISOR_RULE:
            self._queue.put({"type": "decision", "action": action.to_dict(), "decision": decision.to_dict()})
            self._tally.count(action, decision)

    def record_event(self, event: dict[str, Any]) -> None:
        """Queue a record decided elsewhere (a published connection) on the same batched, fail-closed path."""
        self._queue.put(event)

    def _existed_at_launch(self, path: str) -> bool:
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self._existed)

    def on_record_failure(self, kill: Callable[[], None]) -> None:
        self._on_failure = kill

    def check(self, action: Action) -> Decision:
        """The policy's answer, recording nothing: the supervisor vets every entry of a renamed directory
        with it and records only through decide() (the refusals), so a moved tree does not flood the trail."""
        decision = self._policy.decide(action)
        if decision.rule_id in self._existing_only and not self._existed_at_launch(action.target):
            decision = self._policy.decide(action, ignore=self._existing_only)
        return decision

    def decide(self, action: Action) -> Decision:
        decision = self.check(action)
        if self._failed is not None:
            decision = Decision(Verdict.DENY, None, f"guard daemon unreachable: {self._failed.message}")
        elif decision.enforced is Verdict.ASK:
            try:  # the daemon records the request, the approval and the final decision
                decision = self._client.decide(self._session, action)
            except DaemonError as exc:
                decision = Decision(Verdict.DENY, None, f"guard daemon unreachable: {exc.message}")
        else:
            self._queue.put({"type": "decision", "action": action.to_dict(), "decision": decision.to_dict()})
        self._tally.count(action, decision)
        return decision

    def close(self) -> None:
        """Send what is queued and stop; bounded, so a dead daemon cannot hang guard run's exit."""
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _send_loop(self) -> None:
        done = False
        while not done:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            deadline = time.monotonic() + self.LINGER_S
            while len(batch) < self.BATCH:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    done = True
                    break
                batch.append(item)
            if self._failed is None:
                try:
                    self._client.record_batch(self._session, batch)
                except DaemonError as exc:
                    self._fail(exc)

    def _fail(self, exc: DaemonError) -> None:
        self._failed = exc
        self._warn(f"guard: the daemon stopped accepting records ({exc.message}); stopping the sandbox")
        if self._on_failure is not None:
            self._on_failure()


class _NetworkThread:
    """Runs the proxy on the listeners that live inside the sandbox's network namespace."""

    def __init__(self, listeners: Sequence[Any], client: Any, session_id: str, policy: Any,
                 resolve: dict[str, str], decide: Callable[[Action], Decision]) -> None:
        self._listeners = list(listeners)
        self._client = client
        self._session = session_id
        self._policy = policy
        self._host_map = {**dict(policy.host_map), **resolve}
        self._decide = decide
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="guard-proxy", daemon=True)

    def _run(self) -> None:
        from guard.net import Proxy, policy_cidr_grant, serve_bridge

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop

        async def decide(action: Action) -> Decision:
            # off the loop: an `ask` waits for a human, and other connections must go on meanwhile
            return await loop.run_in_executor(None, self._decide, action)

        def send_record(event: dict[str, Any]) -> None:
            try:
                self._client.record(self._session, event)
            except DaemonError:
                pass  # the decision itself is already in the trail; byte counts are best effort

        def record(event: dict[str, Any]) -> None:
            # Called on the proxy's loop when a connection ends: never block the loop on the socket.
            loop.run_in_executor(None, send_record, event)

        proxy = Proxy(decide, record, host_map=self._host_map, cidr_grant=policy_cidr_grant(self._policy))
        async def start() -> list[asyncio.Server]:
            return [await serve_bridge(sock, proxy) for sock in self._listeners]

        servers = loop.run_until_complete(start())
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            for server in servers:
                server.close()
            loop.run_until_complete(self._drain(proxy, servers))
            loop.close()

    @staticmethod
    async def _drain(proxy: Any, servers: list[asyncio.Server]) -> None:
        """End live connections (each still recorded), then flush records before the session closes."""
        await proxy.aclose()
        await asyncio.gather(*(s.wait_closed() for s in servers), return_exceptions=True)
        await asyncio.get_running_loop().shutdown_default_executor()

    def stop(self) -> None:
        self._ready.wait(timeout=2)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)


def open_published_ports(ports: Sequence[int],
                         decide: Callable[[Action], Decision]) -> dict[int, tuple[socket.socket, Decision]]:
    """Bind 127.0.0.1:PORT on the host for each `--publish PORT`, once the policy allows `listen` on it.

    Before the sandbox starts, so a refused or taken port stops the launch (exit 125) instead of failing
    later. The decision is recorded (it goes through the session's decider) and named by every
    connection record."""
    out: dict[int, tuple[socket.socket, Decision]] = {}
    try:
        for port in dict.fromkeys(ports):
            if not 1 <= port <= 65535:
                raise SandboxError(f"--publish {port}: ports are 1-65535")
            decision = decide(Action(Op.LISTEN, f"127.0.0.1:{port}"))
            if decision.enforced is not Verdict.ALLOW:
                raise SandboxError(f"--publish {port}: the policy does not let the agent listen on port "
                                   f"{port} ({decision.verdict.value}: {decision.reason})",
                                   hint="add an allow listen rule for the port, or publish another one")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", port))
                sock.listen(128)
            except OSError as exc:
                sock.close()
                raise SandboxError(f"--publish {port}: cannot listen on 127.0.0.1:{port} on this host: "
                                   f"{exc.strerror}", hint="is another server using the port?") from None
            out[port] = (sock, decision)
    except BaseException:
        for sock, _ in out.values():
            sock.close()
        raise
    return out


class _PublishThread:
    """Relays the host's published ports into the sandbox: each accepted connection gets a socket made
    inside the sandbox's network namespace by its init (`connect`), bytes flow both ways, and a
    `connection` record (protocol "publish") is written when it ends, refused ones included.

    Bounded (PUBLISH_MAX_CONNECTIONS live) and fail closed: when the init cannot connect or is gone, the
    client is closed and the refusal recorded.
    """

    def __init__(self, published: Mapping[int, tuple[socket.socket, Decision]],
                 connect: Callable[[int], socket.socket], record: Callable[[dict[str, Any]], None],
                 max_connections: int = PUBLISH_MAX_CONNECTIONS) -> None:
        self._published = dict(published)
        self._connect = connect
        self._record = record
        self._max = max_connections
        self._live: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="guard-publish", daemon=True)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        servers: list[asyncio.Server] = []
        try:
            for port, (sock, decision) in self._published.items():
                handler = functools.partial(self._serve, port, decision)
                servers.append(loop.run_until_complete(asyncio.start_server(handler, sock=sock)))
            self._ready.set()
            loop.run_forever()
        finally:
            self._ready.set()
            for server in servers:
                server.close()
            loop.run_until_complete(self._drain(servers))
            loop.close()
            for sock, _ in self._published.values():
                sock.close()

    async def _drain(self, servers: list[asyncio.Server]) -> None:
        """End live connections (each still recorded), then stop the executor."""
        for task in list(self._live):
            task.cancel()
        await asyncio.gather(*self._live, *(s.wait_closed() for s in servers), return_exceptions=True)
        await asyncio.get_running_loop().shutdown_default_executor()

    async def _serve(self, port: int, decision: Decision, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        from guard.net.records import ConnectionRecord

        task = asyncio.current_task()
        assert task is not None
        self._live.add(task)
        started = time.monotonic()
        peer = writer.get_extra_info("peername")
        client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        counts = [0, 0]  # bytes client -> agent, agent -> client
        error: str | None = None
        inner_writer: asyncio.StreamWriter | None = None
        try:
            if len(self._live) > self._max:
                error = f"more than {self._max} published connections at once"
                return
            try:
                inner = await asyncio.get_running_loop().run_in_executor(None, self._connect, port)
            except SandboxError as exc:
                error = exc.message
                return
            inner_reader, inner_writer = await asyncio.open_connection(sock=inner)
            await asyncio.gather(_pump(reader, inner_writer, counts, 0),
                                 _pump(inner_reader, writer, counts, 1))
        except (OSError, asyncio.IncompleteReadError) as exc:
            error = str(exc) or type(exc).__name__
        except asyncio.CancelledError:
            # the session is ending; finish normally (a cancelled handler task makes asyncio's stream
            # callback log a traceback on 3.11), the record below still says what happened
            error = "the session ended"
        finally:
            self._live.discard(task)
            for w in (writer, inner_writer):
                if w is not None:
                    w.close()
            refused = error is not None and counts == [0, 0] and inner_writer is None
            self._record(ConnectionRecord(
                protocol="publish", client=client, host="127.0.0.1", port=port,
                verdict=Verdict.DENY.value if refused else decision.verdict.value,
                rule_id="guard:publish" if refused else decision.rule_id,
                reason=error if refused and error else decision.reason,
                bytes_up=counts[0], bytes_down=counts[1], duration_s=time.monotonic() - started,
                error=error).to_dict())

    def stop(self) -> None:
        self._ready.wait(timeout=2)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, counts: list[int], index: int) -> None:
    """Copy until EOF, then pass the half-close on (HTTP clients and servers rely on it)."""
    while True:
        data = await src.read(65536)
        if not data:
            break
        counts[index] += len(data)
        dst.write(data)
        await dst.drain()
    if dst.can_write_eof() and not dst.is_closing():
        dst.write_eof()


def _print_summary(say: Callable[[str], None], session_id: str, status: int, summary: dict[str, int],
                   as_json: bool) -> None:
    if as_json:
        say(json.dumps({"session": session_id, "exit_status": status, **summary}, sort_keys=True))
        return
    denied = summary["denied"]
    tail = f"; see them: guard audit show --session {session_id} --verdict deny" if denied else ""
    say(f"guard: session {session_id} exited {status}: {denied} denied, {summary['allowed']} allowed, "
        f"{summary['execs']} execs, {summary['connections']} connections{tail}")
