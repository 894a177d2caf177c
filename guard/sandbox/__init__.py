"""Linux enforcement: one kernel mechanism per module (landlock, namespaces, mounts, seccomp), a pure
`plan` that turns a compiled policy into a SandboxPlan, and `launch` that applies it in the child in order.

The kernel tier is used in three calls (docs/sandbox.md): `scan.scan_launch_facts` (the one filesystem
walk), `plan.build_plan` (pure; its `report` says what is fully, partly or not enforced on this kernel)
and `launch.spawn` (the namespaced, Landlocked, seccomp-filtered child, held before exec until
`SandboxedProcess.start()`). Modules are imported directly, not re-exported here, so importing one
mechanism never loads the others.
"""
