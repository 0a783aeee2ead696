"""The command line: the click group (`app`) and one module per subcommand."""

from .app import main, run

__all__ = ["main", "run"]
