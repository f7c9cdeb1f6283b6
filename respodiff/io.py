"""The ground floor every other module of respodiff stands on: hashing, crash-safe writes and the cache folder.

Writes: write beside the target, then rename over it. `os.replace` within one folder is atomic, so a reader (or a
resumed run) sees either the old file or the whole new one, never a torn write. Temporary names start with '.' and
end in TEMPORARY_SUFFIX so leftovers can be swept.

Hashes: sha256 throughout. `sha256_file` reads a whole file; `canonical_hash` digests a JSON-able value in a
stable key order; `folder_digest` covers every file of a folder with its relative path; `weights_fingerprint`
samples multi-GB weight folders cheaply; `module_digest` covers an nn.Module's configuration and tensor bytes.

This module imports nothing of respodiff's, so any layer may use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

TEMPORARY_SUFFIX = ".tmp"
_CHUNK = 1 << 20


# --- the cache folder -------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Where downloaded or built assets live unless a config says otherwise: $RESPODIFF_CACHE, else
    ~/.cache/respodiff (the same default as conf/paths/default.yaml)."""
    return Path(os.environ.get("RESPODIFF_CACHE") or Path.home() / ".cache" / "respodiff")


# --- hashing ----------------------------------------------------------------------------------------------------


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_hash(payload: Any) -> str:
    """sha256 of a JSON-able value with sorted keys (values JSON cannot hold are hashed by their str())."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def short_hash(text: str, length: int = 8) -> str:
    """A few hex digits of a string's sha256, to keep a derived name unique and short."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def folder_digest(folder: str | os.PathLike) -> str | None:
    """sha256 over every file of a folder (relative path and bytes, in path order); None when there is no folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(chunk)
    return digest.hexdigest()


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".ckpt")
_FINGERPRINT_SPAN = 1 << 20


def weights_fingerprint(folder: str | os.PathLike) -> str:
    """12 hex digits over every weight file's relative path, size and first and last MiB: a retrained model changes
    them, and a multi-gigabyte Stable Diffusion folder costs a few MiB of reading rather than all of it."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(folder).as_posix()}:{size}\n".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(_FINGERPRINT_SPAN))
            if size > _FINGERPRINT_SPAN:
                handle.seek(max(_FINGERPRINT_SPAN, size - _FINGERPRINT_SPAN))
                digest.update(handle.read())
    return digest.hexdigest()[:12]


def module_digest(module: Any) -> str:
    """sha256 of an nn.Module's configuration and weights (bytes as stored, any dtype or device)."""
    import torch

    digest = hashlib.sha256()
    for sub in module.modules():
        config = getattr(sub, "config", None)
        if config is not None:
            # Private keys ("_use_default_values") are bookkeeping listed in set order, which varies per process.
            public = sorted((key, value) for key, value in dict(config).items() if not key.startswith("_"))
            digest.update(repr(public).encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# --- crash-safe writes ------------------------------------------------------------------------------------------


def replace_atomically(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write through `write(binary handle)` to a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A plain open() (not tempfile) so the file gets the umask's permissions like any other output.
    temporary = temporary_sibling(path)
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


def save_torch_atomically(path: str | os.PathLike, state: Any) -> Path:
    """torch.save through a temporary file, flushed to disk before the rename (a checkpoint survives a power cut)."""
    import torch

    def write(handle: IO[bytes]) -> None:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())

    return replace_atomically(path, write)


def temporary_sibling(path: str | os.PathLike) -> Path:
    """A fresh temporary name beside `path` (for writers that need a path, not a handle: a folder, a library that
    opens the file itself); rename it over `path` with os.replace when complete."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TEMPORARY_SUFFIX}")
