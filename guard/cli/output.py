"""The CLI's one way to print text for people: every line goes through guard.text.shown_text.

Agent-controlled strings (paths, argv, host names, reasons quoting them) reach many messages; escaping at
this edge means no terminal control sequence, bidi override or invisible character can reach a person's
terminal through any of them. Machine output (`--json`, exported or proven records) is written as is,
because tools need its exact bytes; it is JSON, where C0 controls are already escaped.
"""

from __future__ import annotations

import logging

import click

from guard.text import shown_text


def say(text: str = "", *, err: bool = False) -> None:
    """click.echo for human-readable text, escaped."""
    click.echo(shown_text(text), err=err)


class EscapingFormatter(logging.Formatter):
    """Log lines quote actions (paths, command lines); on a person's terminal they are escaped too."""

    def format(self, record: logging.LogRecord) -> str:
        return shown_text(super().format(record))


def setup_logging(level: int = logging.WARNING, fmt: str = "guard: %(levelname)s %(message)s") -> None:
    """The CLI's only logging configuration: to stderr, through EscapingFormatter."""
    handler = logging.StreamHandler()
    handler.setFormatter(EscapingFormatter(fmt))
    logging.basicConfig(level=level, handlers=[handler], force=True)
