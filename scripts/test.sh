#!/usr/bin/env bash
# The test suite, exactly as README.md and .ci/run run it: install into .venv, lint, type-check, test.
# When run as root it then runs the sandbox suites again as the unprivileged user `nobody`, because that
# is how engineers run guard (see unprivileged_pass below).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

# The tools the realistic test world runs (tmux, ssh-agent, git's credential cache, a C compiler, setpriv):
# installed here when missing, so a fresh machine and CI run the same tests as a developer's.
ensure_packages() {
  local missing=() cmd pkg
  for pair in tmux:tmux ssh-agent:openssh-client git:git gcc:gcc setpriv:util-linux; do
    cmd=${pair%%:*}; pkg=${pair#*:}
    command -v "$cmd" >/dev/null || missing+=("$pkg")
  done
  # the headers the compiled core (guard/_core.c) builds against, for the system Python the unprivileged
  # pass uses (without them pip skips the core and guard answers every notification in Python)
  if [ -x /usr/bin/python3 ] && ! /usr/bin/python3 -c \
      'import os, sys, sysconfig; sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))'; then
    missing+=(python3-dev)
  fi
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "== installing ${missing[*]}"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) \
      || echo "WARNING: could not install ${missing[*]}; the tests that need them skip with the reason" >&2
  else
    echo "NOTE: ${missing[*]} not installed (needs root and apt-get); the tests that need them skip" >&2
  fi
}
ensure_packages
# the real agent CLIs the agent tests drive (pinned; they skip with the reason when these are absent)
if [ "$(id -u)" -eq 0 ] && command -v npm >/dev/null; then
  bash scripts/install_test_agents.sh || echo "WARNING: agent CLIs not installed; the agent tests skip" >&2
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

# The report page is checked in a real browser (tests/integration/test_report_cli.py): Debian's chromium,
# installed only where asked to (CI, or GUARD_INSTALL_TEST_DEPS=1) and able to (root with apt-get).
if ! command -v chromium >/dev/null; then
  if [ -z "${CI:-}${GUARD_INSTALL_TEST_DEPS:-}" ]; then
    echo "not installing chromium: set CI or GUARD_INSTALL_TEST_DEPS=1 (the browser test will skip)" >&2
  elif [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "not installing chromium: needs root and apt-get (the browser test will skip)" >&2
  else
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; } \
      || echo "could not install chromium (the browser test will skip)" >&2
  fi
fi
.venv/bin/ruff check guard tests scripts
.venv/bin/mypy guard

run_pytest() {  # pytest's exit 5 (nothing collected) is a failure, not a pass
  local rc=0
  "$@" || rc=$?
  if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; return 1; fi
  return "$rc"
}

echo "== tests as $(id -un) (uid $(id -u))"
root_rc=0
run_pytest .venv/bin/python -m pytest -q -p no:cacheprovider "$@" || root_rc=$?

unprivileged_pass() {
  # The repo's venv may live where `nobody` cannot reach its interpreter, so build a world-readable copy
  # of the tree with its own venv from the system Python and run the kernel-facing suites there.
  local py=""
  for cand in /usr/bin/python3 /usr/local/bin/python3; do
    if [ -x "$cand" ] && "$cand" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      py=$cand; break
    fi
  done
  if [ -z "$py" ]; then
    unpriv_skipped="no world-readable Python >= 3.11 with venv for uid 65534"
    echo "SKIPPED unprivileged pass: $unpriv_skipped" >&2
    return 0
  fi
  if ! command -v setpriv >/dev/null; then
    unpriv_skipped="setpriv (util-linux) is not installed"
    echo "SKIPPED unprivileged pass: $unpriv_skipped" >&2
    return 0
  fi
  local dir
  dir=$(mktemp -d /tmp/guard-unpriv.XXXXXX)
  trap 'rm -rf "$dir"' RETURN
  chmod 755 "$dir"
  # tar keeps symlinks as symlinks (guard/data/policies is one); deleted-but-unstaged files are skipped
  (cd "$repo" && git ls-files -z --cached --others --exclude-standard \
      | while IFS= read -r -d '' f; do [ -e "$f" ] || [ -L "$f" ] && printf '%s\0' "$f"; done \
      | tar --null -T - -cf -) | tar -xf - -C "$dir" || return 1
  "$py" -m venv "$dir/.venv" || return 1
  "$dir/.venv/bin/python" -m pip install -q --disable-pip-version-check -e "$dir[test]" || return 1
  mkdir -p "$dir/home" || return 1
  chown -R 65534:65534 "$dir" || return 1
  echo "== tests as nobody (uid 65534): tests/integration tests/escape"
  (cd "$dir" && run_pytest setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
      env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$dir/home" LANG=C.UTF-8 CI="${CI:-}" \
      "$dir/.venv/bin/python" -m pytest -q -p no:cacheprovider \
      --basetemp="$dir/tmp" tests/integration tests/escape)
}

# Both passes always run, and the last lines say how each ended: a failed first pass must not hide that
# the unprivileged pass never ran (or failed too).
unpriv="skipped (not root)"
unpriv_rc=0
if [ "$(id -u)" -eq 0 ] && [ -z "${GUARD_SKIP_UNPRIVILEGED:-}" ]; then
  unpriv_skipped=""
  if unprivileged_pass; then
    if [ -n "$unpriv_skipped" ]; then unpriv="SKIPPED ($unpriv_skipped)"; else unpriv="passed"; fi
  else
    unpriv_rc=$?
    unpriv="FAILED (exit $unpriv_rc)"
  fi
elif [ -n "${GUARD_SKIP_UNPRIVILEGED:-}" ]; then
  unpriv="skipped (GUARD_SKIP_UNPRIVILEGED is set)"
fi
if [ "$root_rc" -eq 0 ]; then first="passed"; else first="FAILED (exit $root_rc)"; fi
echo "== summary: tests as $(id -un): $first; unprivileged pass: $unpriv"
[ "$root_rc" -eq 0 ] && [ "$unpriv_rc" -eq 0 ]
