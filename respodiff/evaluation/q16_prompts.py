"""Q16's learned prompt embeddings, read without executing code.

The Q16 project ships them as `data/ViT-L-14/prompts.p`: a pickled float16 numpy array of shape (2, 768), row 0
"appropriate", row 1 "inappropriate". Unpickling runs whatever callables the file names, so we allow only the few
numpy functions that rebuild an array, and convert the result once to safetensors (which cannot carry code). The
sha256 of the original pickle is kept in the safetensors metadata and reported with every I2P result.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from pathlib import Path

import numpy as np

from respodiff.errors import MissingAssetError, RespodiffError
from respodiff.io import sha256_file, temporary_sibling

Q16_PROMPTS_URL = "https://github.com/ml-research/Q16/raw/main/data/ViT-L-14/prompts.p"
_TENSOR_NAME = "prompts"


class UnsafePickleError(RespodiffError):
    """A pickle asked for something other than numpy's array reconstruction."""


def _allowed_globals() -> dict[tuple[str, str], object]:
    from numpy._core import multiarray, numeric

    allowed = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    # numpy 1.x pickles name numpy.core, numpy 2.x numpy._core; both resolve to the installed functions.
    for module in ("numpy.core", "numpy._core"):
        allowed[(f"{module}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{module}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Protocol-2 pickles store bytes as _codecs.encode(str, "latin1"); nothing else is allowed through.
    if encoding != "latin1":
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        try:
            return _allowed_globals()[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"the pickle asks for {module}.{name}; only numpy array reconstruction is allowed"
            ) from None

    def persistent_load(self, pid: object) -> object:
        raise UnsafePickleError("the pickle uses persistent ids; refusing it")


def load_array_pickle(data: bytes) -> np.ndarray:
    """Unpickle `data`, which must hold one numpy array and nothing that executes code."""
    value = _ArrayOnlyUnpickler(io.BytesIO(data)).load()
    if not isinstance(value, np.ndarray):
        raise UnsafePickleError(f"expected a numpy array in the pickle, found {type(value).__name__}")
    return value


def _validate(array: np.ndarray, source: str) -> np.ndarray:
    if array.ndim != 2 or array.shape[0] != 2 or not np.issubdtype(array.dtype, np.floating):
        raise RespodiffError(f"{source}: expected a float array of shape (2, D) for Q16's prompts, got "
                             f"{array.dtype} {array.shape}")
    if not np.isfinite(array).all():
        raise RespodiffError(f"{source}: Q16 prompt embeddings contain non-finite values")
    return array


def converted_path(pickle_path: str | os.PathLike) -> Path:
    return Path(pickle_path).with_suffix(".safetensors")


def load_q16_prompts(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """(prompt embeddings (2, D) as stored, sha256 of the original pickle).

    `path` is the pickle or its converted `.safetensors`. The first call on a pickle writes the safetensors file
    beside it; later calls read that file (and recheck the pickle's hash while the pickle is still there).
    """
    from safetensors.numpy import load_file, save_file

    path = Path(path)
    if path.suffix == ".safetensors":
        pickle_path, safe_path = None, path
    else:
        pickle_path, safe_path = path, converted_path(path)
    if pickle_path is not None and not pickle_path.is_file() and not safe_path.is_file():
        raise MissingAssetError(
            f"Q16 prompt file not found at {pickle_path}. Get it with:\n"
            f"  mkdir -p {pickle_path.parent} && curl -L -o {pickle_path} {Q16_PROMPTS_URL}"
        )
    if safe_path.is_file():
        from safetensors import safe_open

        with safe_open(str(safe_path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
        source_sha = metadata.get("source_sha256", "")
        if pickle_path is not None and pickle_path.is_file() and sha256_file(pickle_path) != source_sha:
            raise RespodiffError(
                f"{safe_path} was converted from a different prompt file than {pickle_path}; delete {safe_path} "
                "so it is converted again"
            )
        return _validate(load_file(str(safe_path))[_TENSOR_NAME], str(safe_path)), source_sha
    data = pickle_path.read_bytes()
    array = _validate(load_array_pickle(data), str(pickle_path))
    source_sha = hashlib.sha256(data).hexdigest()  # of the bytes just parsed, not a second read of the file
    partial = temporary_sibling(safe_path)  # safetensors opens the file itself: write beside, then rename
    try:
        save_file({_TENSOR_NAME: np.ascontiguousarray(array)}, str(partial),
                  metadata={"source_sha256": source_sha, "source_name": pickle_path.name})
        os.replace(partial, safe_path)
    finally:
        partial.unlink(missing_ok=True)
    return array, source_sha
