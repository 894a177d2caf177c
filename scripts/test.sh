#!/usr/bin/env bash
# The test suite, exactly as README.md and .ci/run run it: install into .venv, lint, type-check, test.
# Runs as root and (for the sandbox and escape suites) again as an unprivileged user when root.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
.venv/bin/ruff check guard tests scripts
.venv/bin/mypy guard
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
