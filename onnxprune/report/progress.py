"""Progress on stderr: step lines, a transient "working on ..." status and tqdm bars.

One object travels through the pipeline as its `log` callback (Context.log, the `log=` of the
calibration, compensation, sensitivity, sparsity and validation code), so long loops show progress
without knowing where stderr goes:

    with progress.bar(log, "compensation", total=len(spaces), unit="space") as bar:
        for space in spaces:
            ...
            bar.update()

`bar(log, ...)` gives a tqdm bar when `log` is a `Progress` that draws bars (stderr is a terminal
and not --quiet) and a bar that does nothing otherwise: library callers passing a plain function,
pipes, CI logs and --quiet see no bar and no escape codes.

Messages passed to the callback:
- a plain line ("compensate: 1.52s") is printed, above any bar that is running;
- a line starting with "\\r" is a transient status ("compensate ..."): drawn on a terminal only,
  replaced by the next status or line, so a long step shows something when it starts;
- "" clears the transient status.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import IO

Log = Callable[[str], None]

_CLEAR_LINE = "\r\x1b[K"


class NullBar:
    """The bar of a quiet or non-terminal run: every call is accepted and does nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        pass

    def set_description_str(self, text: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NullBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Bar(NullBar):
    """A tqdm bar that tells its Progress while it runs (lines then go through tqdm.write)."""

    def __init__(self, owner: Progress, description: str, total: int | None, unit: str):
        from tqdm import tqdm

        # leave=False: a finished bar disappears and the step's own line ("compensate: 3.1s") stays.
        # A terminal that reports no width (a pty nobody sized) would get an empty bar: 80 columns then.
        sized = _columns(owner.stream) > 0
        self._bar = tqdm(total=total, desc=description, unit=unit, file=owner.stream, leave=False,
                         dynamic_ncols=sized, ncols=None if sized else 80, mininterval=0.2)
        self._owner = owner
        self._closed = False
        owner._open += 1

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self._bar.set_postfix_str(text, refresh=refresh)

    def set_description_str(self, text: str = "", refresh: bool = True) -> None:
        self._bar.set_description_str(text, refresh=refresh)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._owner._open -= 1
            self._bar.close()


class Progress:
    """A `log` callback for the command line: lines always (unless quiet), a status and bars only on a
    terminal. `stream` defaults to sys.stderr as it is when a message arrives (tests replace it)."""

    def __init__(self, stream: IO[str] | None = None, *, quiet: bool = False, bars: bool | None = None):
        self._stream = stream
        self.quiet = quiet
        self._bars = bars
        self._status = False  # a transient status line is on the screen
        self._open = 0  # bars running

    @property
    def stream(self) -> IO[str]:
        return self._stream if self._stream is not None else sys.stderr

    @property
    def interactive(self) -> bool:
        """Bars and statuses are drawn: not quiet, and stderr is a terminal (unless told otherwise)."""
        if self.quiet:
            return False
        if self._bars is not None:
            return self._bars
        isatty = getattr(self.stream, "isatty", None)
        try:
            return bool(isatty and isatty())
        except (OSError, ValueError):  # a closed or odd stream: no terminal
            return False

    def __call__(self, message: str) -> None:
        if self.quiet:
            return
        if message.startswith("\r") or message == "":
            if self.interactive and not self._open:
                self._show_status(message.lstrip("\r"))
            return
        self._clear_status()
        if self._open:
            from tqdm import tqdm

            tqdm.write(message, file=self.stream)
        else:
            self.stream.write(message + "\n")
            self.stream.flush()

    def bar(self, description: str, total: int | None = None, unit: str = "it") -> NullBar | _Bar:
        """A tqdm bar on this stream (NullBar when not interactive); closes itself as a context manager."""
        if not self.interactive:
            return NullBar()
        self._clear_status()
        return _Bar(self, description, total, unit)

    def _show_status(self, text: str) -> None:
        if not text:
            self._clear_status()
            return
        width = max((_columns(self.stream) or 80) - 1, 10)
        self.stream.write(_CLEAR_LINE + text[:width])
        self.stream.flush()
        self._status = True

    def _clear_status(self) -> None:
        if self._status:
            self.stream.write(_CLEAR_LINE)
            self.stream.flush()
            self._status = False


def _columns(stream: IO[str]) -> int:
    """The terminal's width, 0 when it reports none."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


def bar(log: Log | None, description: str, total: int | None = None, unit: str = "it") -> NullBar:
    """A progress bar through whatever `log` is: a Progress draws one, anything else gets a NullBar."""
    make = getattr(log, "bar", None)
    if callable(make):
        return make(description, total=total, unit=unit)
    return NullBar()


def close_all() -> None:
    """Take every bar and status off the terminal: an error line must start on a clean line, also when
    the exception left a bar open (its frame still alive in the traceback)."""
    tqdm_module = sys.modules.get("tqdm")
    if tqdm_module is not None:
        for instance in list(getattr(tqdm_module.tqdm, "_instances", ())):
            instance.close()
    try:
        if sys.stderr.isatty():
            sys.stderr.write(_CLEAR_LINE)
            sys.stderr.flush()
    except (OSError, ValueError):
        pass
