"""Where one `guard run -- CMD` spends its time, phase by phase, in this process (run by bench_launch.py
--phases, or by hand from a workspace with the daemon running: python scripts/launch_phases.py true).

Wraps the functions `guard.runner.run_guarded` calls with a timer (the same functions, called the same way)
and prints one JSON object: interpreter start-up to the first line of this script (`startup_ms`, from the
process's start time in /proc), the imports of `guard.cli.main` and of the run path, then each phase of
run_guarded with its start and duration in ms. Phases that overlap (the session opening in its thread and
the scan in the main thread) both appear, each with its own start.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()
T0_CLOCK = time.clock_gettime(time.CLOCK_BOOTTIME)

import contextlib  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

marks: list[tuple[str, float, float]] = []


def wrap(module: str, attr: str, label: str | None = None, owner: Callable[[Any], Any] | None = None) -> None:
    """Time every call of module[.owner].attr; absent in this guard's version (an older tree measured with
    bench_run --baseline style PYTHONPATH): nothing to time."""
    try:
        mod = importlib.import_module(module)
        holder = owner(mod) if owner else mod
        fn = getattr(holder, attr)
    except (ImportError, AttributeError):
        return

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            marks.append((label or attr, start, time.perf_counter()))

    setattr(holder, attr, timed)


def started_ms_ago() -> float:
    """How long ago (ms) the kernel started this process: /proc/self/stat's starttime in clock ticks."""
    with open("/proc/self/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    start_s = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return (T0_CLOCK - start_s) * 1000


def main() -> None:
    startup = started_ms_ago()
    if sys.argv[1:2] in (["-h"], ["--help"]):  # not a command to run under guard
        print(__doc__)
        return
    import guard.cli.main  # noqa: F401 - what `python -m guard` imports before it parses argv

    t_cli = time.perf_counter()
    from guard import runner

    for name in ("guard.announce", "guard.daemon.client", "guard.integrations.channel", "guard.net.grants",
                 "guard.net.forward", "guard.net.threads", "guard.policy", "guard.sandbox.landlock",
                 "guard.sandbox.audit_mode", "guard.sandbox.launch", "guard.sandbox.plan",
                 "guard.sandbox.scan", "guard.sandbox.seccomp", "guard.sandbox.state_dirs",
                 "guard.sandbox.supervisor", "guard.sandbox.tool_env", "guard.policy_cache"):
        with contextlib.suppress(ImportError):  # an older guard may not have it
            importlib.import_module(name)  # what run_guarded imports when it starts
    t_imports = time.perf_counter()
    wrap("guard.policy_cache", "load_policy_cached", "policy (compiled-policy cache)")
    wrap("guard.policy", "load_policy", "policy (compiled from the files)")
    wrap("guard.daemon.client", "open_session", "session open (daemon)", owner=lambda m: m.DaemonClient)
    wrap("guard.daemon.client", "ensure_running", "daemon connect", owner=lambda m: m.DaemonClient)
    wrap("guard.runner", "_open_session", "session open + spool (daemon)")
    wrap("guard.sandbox.state_dirs", "create_state_dirs")
    wrap("guard.runner", "agent_env")
    wrap("guard.sandbox.scan", "scan_launch_facts", "scan")
    wrap("guard.sandbox.git_launch", "launch_policy", "git's rules, with the scan(s)")
    wrap("guard.sandbox.supervisor", "protected_link_names")  # an older guard: at launch
    wrap("guard.sandbox.link_names", "protected_link_names",
         "protected_link_names (its own thread, beside the agent's start)")
    wrap("guard.announce", "start", "announcer start", owner=lambda m: m.AskAnnouncer)
    wrap("guard.runner", "_private_layers")
    wrap("guard.sandbox.plan", "build_plan")
    wrap("guard.sandbox.launch", "spawn", "spawn (fork, namespaces, mounts, Landlock, seccomp)")
    wrap("guard.sandbox.launch", "start", "release", owner=lambda m: m.SandboxedProcess)
    wrap("guard.runner", "_wait_forwarding_signals", "agent runs and exits")
    wrap("guard.net.threads", "stop", "proxy stop", owner=lambda m: m.ProxyThread)
    wrap("guard.runner", "_remove_private_layers")
    wrap("guard.session", "close", "session end (recorder.close)", owner=lambda m: m.Recorder)
    t_run = time.perf_counter()
    opts = runner.RunOptions(argv=tuple(sys.argv[1:]) or ("true",), workspace=Path.cwd().resolve(),
                             cwd=Path.cwd())
    result = runner.run_guarded(opts, out=lambda _line: None)
    t_end = time.perf_counter()
    print(json.dumps({
        "guard": os.path.dirname(runner.__file__),
        "status": result.status,
        "startup_ms": round(startup, 1),
        "import_cli_ms": round((t_cli - T0) * 1000, 1),
        "import_run_ms": round((t_imports - t_cli) * 1000, 1),
        "run_guarded_ms": round((t_end - t_run) * 1000, 1),
        "phases": [{"phase": name, "at_ms": round((start - t_run) * 1000, 1),
                    "ms": round((end - start) * 1000, 1)} for name, start, end in marks],
    }), flush=True)
    exit_now = getattr(importlib.import_module("guard.cli.run"), "_exit_now", None)
    if exit_now is not None:  # leave as `guard run` leaves, so the parent's wall time counts the same exit
        exit_now(result.status)


if __name__ == "__main__":
    main()
