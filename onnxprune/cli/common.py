"""What every subcommand shares: progress lines on stderr, checks of the report paths."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click


def progress_log(message: str) -> None:
    """Progress lines ('\r...') overwrite each other on a terminal and are skipped elsewhere."""
    if message.startswith("\r") or message == "":
        if sys.stderr.isatty():
            sys.stderr.write(message if message else "\n")
            sys.stderr.flush()
        return
    click.echo(message, err=True)


def check_side_outputs(paths: dict[str, str | None], models: list[str], produced: Sequence[str] = ()) -> None:
    """Reports and plots go to writable paths that are neither each other nor any model file involved."""
    from ..api import check_report_path
    from ..io.files import check_distinct, model_files

    given = {option: path for option, path in paths.items() if path}
    if not given:
        return
    check_distinct(given)
    protected = {str(p) for model in models for p in model_files(model)}
    protected |= {str(p) for target in produced for p in (target, f"{target}.data")}
    for option, path in given.items():
        check_report_path(path, option, sorted(protected))
