"""The CLI's output edge: human text and log lines never carry what a terminal would act on."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from guard.cli.output import EscapingFormatter
from guard.model import Action, Op


def test_a_log_line_naming_an_agents_action_is_escaped() -> None:
    action = Action(Op.WRITE, os.fsdecode(b"/w/\x1b[2K\rok\xff"))
    record = logging.LogRecord("guard.sandbox.supervisor", logging.ERROR, __file__, 1,
                               "decide() failed for %s", (action,), None)
    line = EscapingFormatter("%(message)s").format(record)
    assert line == "decide() failed for write /w/\\x1b[2K\\rok\\xff"


def test_the_guard_cli_logs_through_the_escaping_formatter() -> None:
    code = ("import logging, sys\n"
            "from guard.cli.main import main\n"
            "@main.command('x')\n"
            "def x():\n"
            "    logging.getLogger('guard.t').warning('name %s', '\\x1b]0;pwned\\x07')\n"
            "sys.argv = ['guard', 'x']\n"
            "main()\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert b"\x1b" not in res.stderr and b"name \\x1b]0;pwned\\x07" in res.stderr, res.stderr
