"""The image store on disk: `store.json` (what configuration it holds), `manifest.parquet`, `images/`.

Layout:
    <store>/store.json                  configuration hash + the identity it was computed from (written first)
    <store>/manifest.parquet            one row per image; status "done" only once its image is on disk
    <store>/manifest.shard-<rank>.parquet  a process's progress during a multi-process run (merged, then deleted)
    <store>/images/<prompt_id>/<sample_index>.png   (.jpg for eval.image_format=jpeg75: the manifest's paths say which)

Every file is written to a temporary name in its final folder and then renamed (`os.replace`), so a crash leaves
either the old file or the new one, never half of one. The files are the truth: on start every image is checked
(decodable, right size) and the manifest's status is rebuilt from what is really there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image, PngImagePlugin

from ..errors import CheckpointMismatchError
from ..io import TEMPORARY_SUFFIX, canonical_hash, replace_atomically, write_text_atomically
from .plan import DONE, IMAGE_DEFINING_COLUMNS, PENDING

STORE_FILE = "store.json"
MANIFEST_FILE = "manifest.parquet"
SHARD_PATTERN = "manifest.shard-*.parquet"
SCHEMA = "respodiff.image_store/1"


def shard_file(store: Path, rank: int) -> Path:
    return store / f"manifest.shard-{rank}.parquet"


# ---------------------------------------------------------------------------------------------------------------
# Identity


def manifest_hash(manifest: pd.DataFrame) -> str:
    """Digest of the columns that decide pixels: prompts, seeds, concept weights, sampler settings, paths."""
    columns = {column: manifest[column].tolist() for column in IMAGE_DEFINING_COLUMNS}
    return canonical_hash(columns)


def check_store(store: Path, identity: Mapping[str, Any]) -> bool:
    """Raise if `store` holds another configuration; True when it already holds this one."""
    record_path = store / STORE_FILE
    if not record_path.is_file():
        if store.is_dir() and any(store.iterdir()):
            raise CheckpointMismatchError(
                f"{store} is not empty but has no {STORE_FILE}, so it is not an image store of this project. "
                "Choose an empty or new output directory (or delete this folder if its content is disposable)."
            )
        return False
    try:
        record = json.loads(record_path.read_text())
    except (OSError, json.JSONDecodeError) as failure:
        raise CheckpointMismatchError(
            f"{record_path} cannot be read ({failure}); delete the folder {store} to start fresh"
        ) from failure
    if record.get("config_hash") == canonical_hash(identity):
        return True
    saved = record.get("identity", {})
    differing = sorted(key for key in set(saved) | set(identity) if saved.get(key) != identity.get(key))
    raise CheckpointMismatchError(
        f"the image store {store} holds images of another configuration (differs in: {', '.join(differing)}). "
        f"Nothing was generated. To start fresh delete the folder {store}, or choose another output directory "
        "(another run folder or hydra.run.dir)."
    )


def write_store_record(store: Path, identity: Mapping[str, Any], info: Mapping[str, Any]) -> None:
    record = {
        "schema": SCHEMA,
        "config_hash": canonical_hash(identity),
        "identity": dict(identity),
        "info": dict(info),
    }
    store.mkdir(parents=True, exist_ok=True)
    write_text_atomically(store / STORE_FILE, json.dumps(record, indent=2, sort_keys=True, default=str))


# ---------------------------------------------------------------------------------------------------------------
# Manifest files


def write_manifest(path: Path, manifest: pd.DataFrame) -> None:
    replace_atomically(path, lambda handle: manifest.to_parquet(handle, index=False))


def read_manifest(store: str | os.PathLike, absolute_paths: bool = False) -> pd.DataFrame:
    """The store's manifest; `absolute_paths=True` gives the form evaluation expects."""
    store = Path(store)
    manifest = pd.read_parquet(store / MANIFEST_FILE)
    if absolute_paths:
        manifest["path"] = [str(store / path) for path in manifest["path"]]
    return manifest


def shard_progress(store: Path) -> set[str]:
    """Image ids the shard files of this or an interrupted run report done."""
    done: set[str] = set()
    for path in sorted(store.glob(SHARD_PATTERN)):
        try:
            shard = pd.read_parquet(path, columns=["image_id", "status"])
        except (OSError, ValueError):
            continue  # an unreadable shard only costs a re-check: the files decide
        done.update(shard.loc[shard["status"] == DONE, "image_id"])
    return done


def remove_leftovers(store: Path) -> None:
    """Delete shard manifests and temporary files an interrupted run left (call before any process writes)."""
    for path in store.glob(SHARD_PATTERN):
        path.unlink(missing_ok=True)
    for path in store.glob(f".*{TEMPORARY_SUFFIX}"):
        path.unlink(missing_ok=True)
    images = store / "images"
    if images.is_dir():
        for path in images.rglob(f".*{TEMPORARY_SUFFIX}"):
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------------------
# Images


JPEG_QUALITY = 75  # PIL's default, which the public scripts' `image.save("<i>.jpg")` uses
_JPEG_END = b"\xff\xd9"  # EOI marker: a JPEG cut short lacks it


def write_image(path: Path, image: Image.Image, text: Mapping[str, str] | None = None) -> None:
    """Write `image` in the format its path's suffix names (docs/CONTRACTS.md): .png with `text` as PNG text
    chunks, or .jpg at quality 75 (JPEG carries no such chunks; the manifest holds the same facts). Any other
    suffix is refused rather than written as PNG under a misleading name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix not in (".png", ".jpg"):
        raise ValueError(f"{path}: the image store writes .png or .jpg files, not {path.suffix or 'no suffix'!r}")
    if path.suffix == ".jpg":
        replace_atomically(path, lambda handle: image.save(handle, format="JPEG", quality=JPEG_QUALITY))
        return
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    replace_atomically(path, lambda handle: image.save(handle, format="PNG", pnginfo=info))


def image_ok(path: Path, width: int, height: int) -> bool:
    """The file is a complete image of the expected size, in the format its suffix names.

    For PNG `verify()` walks every chunk and checks its CRC and the closing IEND chunk without inflating the pixels,
    so a truncated or damaged file fails at a fraction of a full decode's cost (a store of 30k images is re-checked
    on every start). PIL verifies nothing in a JPEG, so there the header and the closing EOI marker are checked.
    """
    expected = "JPEG" if path.suffix == ".jpg" else "PNG"
    try:
        with Image.open(path) as image:
            if image.format != expected or image.size != (width, height):
                return False
            image.verify()
        if expected == "JPEG":
            with open(path, "rb") as handle:
                handle.seek(-2, os.SEEK_END)
                return handle.read(2) == _JPEG_END
        return True
    except Exception:  # noqa: BLE001 - any failure to read means "not a usable image"
        return False


def present_rows(store: Path, rows: pd.DataFrame, threads: int = 8) -> list[bool]:
    """Which rows' images are on disk and intact, checked in parallel (PIL and zlib release the GIL)."""
    jobs = [
        (store / path, int(width), int(height))
        for path, width, height in rows[["path", "width", "height"]].itertuples(index=False)
    ]
    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(jobs)))) as pool:
        return list(pool.map(lambda job: image_ok(*job), jobs))


def with_status(manifest: pd.DataFrame, done_ids: Iterable[str]) -> pd.DataFrame:
    done_ids = set(done_ids)
    out = manifest.copy()
    out["status"] = [DONE if image_id in done_ids else PENDING for image_id in out["image_id"]]
    return out
