"""Linux enforcement: one kernel mechanism per module (landlock, namespaces, mounts, seccomp), a pure
`plan` that turns a compiled policy into a SandboxPlan, and `launch` that applies it in the child in order."""
