#!/usr/bin/env bash
# Installs the pinned agent CLIs the agent tests run (tests/escape/agent_real.py) into one world-readable
# directory under /opt, which the default policy lets a sandbox read and execute, as a system-wide npm
# install would. Needs root and npm; the tests skip with the reason when the agents are absent.
set -euo pipefail
dir=${GUARD_TEST_AGENTS:-/opt/guard-test-agents}
CLAUDE_CODE=2.1.332
CODEX=0.171.0
GEMINI=0.61.0
AIDER=0.86.1
have() { [ -x "$dir/node_modules/.bin/$1" ] && "$dir/node_modules/.bin/$1" --version 2>/dev/null | grep -q "$2"; }
have_aider() { [ -x "$dir/aider-venv/bin/aider" ] && "$dir/aider-venv/bin/aider" --version 2>/dev/null | grep -q "$AIDER"; }
if have claude "$CLAUDE_CODE" && have codex "$CODEX" && have gemini "$GEMINI" && have_aider; then exit 0; fi
command -v npm >/dev/null || { echo "install_test_agents: npm is not installed" >&2; exit 1; }
mkdir -p "$dir"
npm install --silent --no-audit --no-fund --prefix "$dir" \
  "@anthropic-ai/claude-code@$CLAUDE_CODE" "@openai/codex@$CODEX" "@google/gemini-cli@$GEMINI"
# npm may hold back the package's postinstall, which puts the native binary in place of the stub
(cd "$dir/node_modules/@anthropic-ai/claude-code" && node install.cjs >/dev/null)
# Aider from PyPI, in a venv of the system's Python (world-readable, so the unprivileged pass can run it)
if ! have_aider; then
  py=/usr/bin/python3
  [ -x "$py" ] || py=$(command -v python3)
  rm -rf "$dir/aider-venv"
  "$py" -m venv "$dir/aider-venv"
  "$dir/aider-venv/bin/pip" install -q --disable-pip-version-check "aider-chat==$AIDER"
fi
chmod -R a+rX "$dir"
have claude "$CLAUDE_CODE" && have codex "$CODEX" && have gemini "$GEMINI" && have_aider
