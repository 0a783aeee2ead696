"""The `onnxprune` click group: `prune` is the default command; every subcommand lives in a module of its own."""

from __future__ import annotations

import os
import sys

import click

from ..errors import OnnxPruneError

_DEBUG_ENV = "ONNXPRUNE_DEBUG"


class DefaultToPrune(click.Group):
    """`onnxprune in.onnx out.onnx` means `onnxprune prune in.onnx out.onnx`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # No arguments at all is a usage error of `prune` (one line), not a page of help.
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h", "--version")):
            args = ["prune", *args]
        return super().parse_args(ctx, args)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The default command's form first: it is what most calls look like.
        formatter.write_usage(ctx.command_path, "IN OUT [OPTIONS]")
        formatter.write_usage(ctx.command_path, "COMMAND [ARGS]...", prefix="   or: ")


@click.group(cls=DefaultToPrune, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="onnxprune")
def main() -> None:
    """Prune exported ONNX models: smaller, faster, still valid.

    \b
    `prune` is the default command: `onnxprune IN OUT [options]` runs
    `onnxprune prune IN OUT [options]` (options: `onnxprune prune --help`).
    Every command writes its machine-readable result with `--json PATH`.
    """


def _fail(message: str, code: int = 2) -> None:
    from ..report.progress import close_all

    close_all()
    click.echo(f"onnxprune: error: {message}", err=True)
    sys.exit(code)


def _add_subcommands() -> None:
    from . import bench, check_sparsity, inspect, prune, sensitivity, validate

    for module in (prune, inspect, sensitivity, validate, bench, check_sparsity):
        main.add_command(module.command)


_add_subcommands()


def run() -> None:
    """Console entry point: user errors become one line and exit code 2, never a traceback."""
    try:
        main(standalone_mode=False)
    except OnnxPruneError as exc:
        _fail(str(exc))
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code if exc.exit_code != 1 else 2)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except OSError as exc:  # disk full, permissions, a file vanishing under us: the system's words, one line
        where = f" '{exc.filename}'" if exc.filename else ""
        _fail(f"cannot read or write{where}: {exc.strerror or exc}")
    except Exception as exc:
        if os.environ.get(_DEBUG_ENV):
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        _fail(f"internal error: {type(exc).__name__}: {first} (set {_DEBUG_ENV}=1 for a traceback)", 70)
