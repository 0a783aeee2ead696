"""What a folder holds, to check that a failed or refused command left it exactly as it was."""

from __future__ import annotations

import os
from pathlib import Path


def listing(folder: Path) -> dict[str, bytes]:
    """Every entry under `folder` (hidden ones too) with its content; links by their target."""
    result = {}
    for entry in sorted(folder.rglob("*")):
        key = str(entry.relative_to(folder))
        if entry.is_symlink():
            result[key] = b"-> " + os.readlink(entry).encode()
        elif entry.is_file():
            result[key] = entry.read_bytes()
        else:
            result[key] = b"<dir>"
    return result
