"""Is an image store finished? Answered from files alone, so a rerun skips loading the model for a done store.

The stages fingerprint what a store's images depend on as far as it is known before any model loads (the manifest,
the engine version and what the caller adds: model, device, method, generation options, modules) and, once the
store is complete, record that fingerprint in `<store>.generated.json` beside it. A later run with the same
fingerprint and an intact store has nothing to do; any difference only costs a model load, after which the engine
decides from the store itself (generate() renders just what is missing).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..io import canonical_hash, write_json_atomically
from .engine import ENGINE_VERSION
from .plan import DONE
from .store import STORE_FILE, manifest_hash, present_rows, read_manifest

# The fingerprint's own keys; a caller's context may not replace them.
_RESERVED = ("images", "engine")


def generation_fingerprint(manifest: pd.DataFrame, context: Mapping[str, Any]) -> str:
    """Hash of the manifest's image-defining columns, the engine version and `context` (JSON-able values)."""
    clashing = sorted(set(context) & set(_RESERVED))
    if clashing:
        raise ValueError(f"the generation fingerprint's context may not set {clashing}")
    return canonical_hash({"images": manifest_hash(manifest), "engine": ENGINE_VERSION, **context})


def is_finished(store: Path, manifest: pd.DataFrame, fingerprint: str) -> bool:
    """A previous run rendered exactly this manifest under this fingerprint, and every image is still intact."""
    store = Path(store)
    try:
        record = json.loads(_record_path(store).read_text())
        store_record = json.loads((store / STORE_FILE).read_text())
        # The store's own hash too: a store deleted and rebuilt for another configuration is not this one.
        if record.get("fingerprint") != fingerprint or record.get("store") != store_record.get("config_hash"):
            return False
        saved = read_manifest(store)
    except (OSError, ValueError):
        return False
    if len(saved) != len(manifest) or not (saved["status"] == DONE).all():
        return False
    return all(present_rows(store, manifest))


def mark_finished(store: Path, fingerprint: str) -> None:
    """Record that `store` is complete for `fingerprint` (call after generate() returned)."""
    store = Path(store)
    store_record = json.loads((store / STORE_FILE).read_text())
    record = {"fingerprint": fingerprint, "store": store_record.get("config_hash")}
    write_json_atomically(_record_path(store), record)


def unfinished_images(store: Path, manifest: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(paths not on disk, paths on disk but damaged) of the manifest's images, judged from the files themselves
    (a killed run's manifest may lag behind them). Paths are relative to the store."""
    present = present_rows(store, manifest)
    failed = [path for path, ok in zip(manifest["path"], present) if not ok]
    absent = [path for path in failed if not (store / path).is_file()]
    return absent, [path for path in failed if (store / path).is_file()]


def _record_path(store: Path) -> Path:
    # Beside the store, not in it: the store's folder belongs to the engine.
    return store.with_name(f"{store.name}.generated.json")
