"""Crash-safe file writes: write beside the target, then rename over it.

`os.replace` within one folder is atomic, so a reader (or a resumed run) sees either the old file or the whole new
one, never a torn write. Temporary names start with '.' and end in TEMPORARY_SUFFIX so leftovers can be swept.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

TEMPORARY_SUFFIX = ".tmp"


def replace_atomically(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write through `write(binary handle)` to a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A plain open() (not tempfile) so the file gets the umask's permissions like any other output.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TEMPORARY_SUFFIX}")
    try:
        with open(temporary, "wb") as handle:
            write(handle)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    return replace_atomically(path, lambda handle: handle.write(text.encode("utf-8")))


def write_json_atomically(path: str | os.PathLike, payload: Any, **dump_options: Any) -> Path:
    options = {"indent": 2, **dump_options}
    return write_text_atomically(path, json.dumps(payload, **options) + "\n")
