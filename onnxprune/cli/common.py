"""What every subcommand shares: the progress log on stderr, checks of the output paths."""

from __future__ import annotations

from collections.abc import Sequence

from ..report.progress import Progress


def progress_log(quiet: bool = False) -> Progress:
    """The `log` a command hands to the pipeline: step lines on stderr; bars and a "working on ..."
    status only when stderr is a terminal; nothing at all with --quiet."""
    return Progress(quiet=quiet)


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
