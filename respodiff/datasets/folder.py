"""A prepared dataset on disk: data/<name>/ with a table, (for COCO) the reference images and `manifest.json`.

The manifest lists every file with its size and sha256 and is written last, so its presence means the folder is
complete.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from respodiff.errors import ConfigError, MissingAssetError
from respodiff.io import sha256_file, write_text_atomically

MANIFEST = "manifest.json"
SCHEMA = "respodiff.dataset/1"


class DatasetError(MissingAssetError):
    """A local dataset is present but wrong (count, checksum, columns); the message says how to rebuild it."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    expected_count: int
    hub_id: str
    table: str
    count_key: str


DATASETS = {
    "i2p": DatasetSpec("i2p", 4703, "AIML-TUDA/i2p", "prompts.parquet", "prompts"),
    "coco30k": DatasetSpec("coco30k", 30000, "sayakpaul/coco-30-val-2014", "captions.parquet", "captions"),
}


def spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    return DATASETS[name]


def default_folder(name: str) -> Path:
    """data/<name> under $RESPODIFF_DATA (default ./data), as conf/paths does."""
    return Path(os.environ.get("RESPODIFF_DATA") or "data") / name


def prepare_command(name: str, folder: str | os.PathLike | None = None) -> str:
    folder = folder if folder is not None else default_folder(name)
    return (f"python -m respodiff.datasets prepare {name} --from-hub --out {folder}   "
            f"(or --from-files PATH with a local copy)")


def file_entry(path: Path) -> dict:
    return {"sha256": sha256_file(path), "size": path.stat().st_size}


def write_manifest(folder: Path, name: str, source: str, counts: dict, files: dict[str, dict],
                   expected_count: int) -> dict:
    manifest = {"schema": SCHEMA, "name": name, "source": source,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "expected_count": expected_count, "counts": counts, "files": files}
    # The manifest appears last (and whole), so its presence means "complete".
    write_text_atomically(folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise MissingAssetError(f"{path} does not exist")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix in (".csv", ".tsv"):
        return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",", keep_default_na=False)
    raise ConfigError(f"cannot read {path}: expected .parquet, .csv or .tsv")


def check_count(found: int, expected: int, what: str, name: str, folder: Path) -> None:
    if found != expected:
        raise DatasetError(f"{what}: found {found} entries, expected {expected}. Rebuild it with: "
                           f"{prepare_command(name, folder)}")
