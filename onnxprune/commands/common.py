"""What every subcommand shares: progress lines on stderr."""

from __future__ import annotations

import sys

import click


def progress_log(message: str) -> None:
    """Progress lines ('\r...') overwrite each other on a terminal and are skipped elsewhere."""
    if message.startswith("\r") or message == "":
        if sys.stderr.isatty():
            sys.stderr.write(message if message else "\n")
            sys.stderr.flush()
        return
    click.echo(message, err=True)
