"""Local evaluation datasets: I2P prompts and COCO-30K captions with reference images.

    python -m respodiff.datasets prepare i2p --from-hub --out data/i2p
    python -m respodiff.datasets prepare i2p --from-files i2p_benchmark.csv --out data/i2p
    python -m respodiff.datasets prepare coco30k --from-hub --out data/coco30k
    python -m respodiff.datasets prepare coco30k --from-files /path/to/folder_with_csv_and_images --out data/coco30k
    python -m respodiff.datasets verify i2p [--data-dir data/i2p] [--quick]

`prepare` writes a table (parquet) plus, for COCO, the reference images byte for byte (re-encoding JPEGs would move
FID), and a `manifest.json` with counts and sha256 checksums. `verify` (and every benchmark before it runs) checks
the count, that every file exists and, in full mode, every checksum. `--from-hub` fetches I2P's CSV with
huggingface_hub; COCO needs the optional `datasets` package (`pip install 'respodiff[datasets]'`), imported only
there.

Modules: folder (the prepared folder and its manifest), i2p, coco (how each is prepared); verification, the loaders
and the command line are here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from respodiff.errors import MissingAssetError, RespodiffError
from respodiff.io import sha256_file

from .coco import prepare_coco
from .folder import (
    DATASETS,
    MANIFEST,
    SCHEMA,
    DatasetError,
    DatasetSpec,
    check_count,
    default_folder,
    prepare_command,
    spec,
)
from .i2p import I2P_HUB_FILE, i2p_counts, normalise_i2p, parse_categories, prepare_i2p, warn_if_unusual_i2p

__all__ = [
    "DATASETS",
    "I2P_HUB_FILE",
    "MANIFEST",
    "SCHEMA",
    "DatasetError",
    "DatasetSpec",
    "default_folder",
    "i2p_counts",
    "load_coco",
    "load_i2p",
    "main",
    "normalise_i2p",
    "parse_categories",
    "prepare",
    "prepare_coco",
    "prepare_command",
    "prepare_i2p",
    "spec",
    "verify",
]


def prepare(name: str, out: str | os.PathLike | None = None, **kwargs) -> dict:
    out = out if out is not None else default_folder(name)
    return {"i2p": prepare_i2p, "coco30k": prepare_coco}[spec(name).name](out, **kwargs)


def verify(name: str, folder: str | os.PathLike | None = None, *, expected_count: int | None = None,
           full: bool = True) -> dict:
    """Check a prepared dataset; returns its manifest. `full` recomputes every checksum (the table's always)."""
    data_spec = spec(name)
    folder = Path(folder) if folder is not None else default_folder(name)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise MissingAssetError(f"dataset {name!r} is not prepared at {folder} (no {MANIFEST}). Run: "
                                f"{prepare_command(name, folder)}")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("schema") != SCHEMA or manifest.get("name") != name:
        raise DatasetError(f"{manifest_path} is not a {SCHEMA} manifest of {name!r}. Rebuild it with: "
                           f"{prepare_command(name, folder)}")
    expected = expected_count if expected_count is not None else data_spec.expected_count
    files: dict[str, dict] = manifest["files"]
    missing = [rel for rel in files if not (folder / rel).is_file()]
    if missing:
        raise MissingAssetError(f"dataset {name!r} at {folder}: {len(missing)} of {len(files)} files are missing "
                                f"(e.g. {missing[:3]}). Rebuild it with: {prepare_command(name, folder)}")
    to_hash = list(files) if full else [data_spec.table]
    bad = [rel for rel in files if (folder / rel).stat().st_size != files[rel]["size"]]
    bad += [rel for rel in to_hash if rel not in bad and sha256_file(folder / rel) != files[rel]["sha256"]]
    if bad:
        raise DatasetError(f"dataset {name!r} at {folder}: {len(bad)} files do not match their checksum "
                           f"(e.g. {bad[:3]}). Rebuild it with: {prepare_command(name, folder)}")
    table = pd.read_parquet(folder / data_spec.table)
    check_count(len(table), expected, f"dataset {name!r} at {folder}", name, folder)
    check_count(manifest["counts"][data_spec.count_key], expected, f"the manifest of {name!r}", name, folder)
    if name == "coco30k":
        unlisted = sorted(set(table["file"]) - set(files))
        if unlisted:
            raise DatasetError(f"captions name images the manifest does not list: {unlisted[:3]}. Rebuild with: "
                               f"{prepare_command(name, folder)}")
    if name == "i2p" and expected == data_spec.expected_count:
        warn_if_unusual_i2p(manifest["counts"])
    return manifest


def load_i2p(folder: str | os.PathLike | None = None, *, expected_count: int | None = None,
             full: bool = False) -> pd.DataFrame:
    folder = Path(folder) if folder is not None else default_folder("i2p")
    verify("i2p", folder, expected_count=expected_count, full=full)
    return pd.read_parquet(folder / spec("i2p").table)


def load_coco(folder: str | os.PathLike | None = None, *, expected_count: int | None = None,
              full: bool = False) -> pd.DataFrame:
    """COCO captions with `reference` = absolute path of each caption's reference image."""
    folder = Path(folder) if folder is not None else default_folder("coco30k")
    verify("coco30k", folder, expected_count=expected_count, full=full)
    table = pd.read_parquet(folder / spec("coco30k").table)
    table["reference"] = [str((folder / rel).resolve()) for rel in table["file"]]
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m respodiff.datasets", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="build data/<name> from the Hub or from local files")
    prep.add_argument("name", choices=sorted(DATASETS))
    source = prep.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-hub", action="store_true")
    source.add_argument("--from-files", metavar="PATH")
    prep.add_argument("--out", help="output folder (default: data/<name>)")
    prep.add_argument("--expected-count", type=int, help="override the canonical count (dev subsets only)")
    check = commands.add_parser("verify", help="check count, files and checksums of a prepared dataset")
    check.add_argument("name", choices=sorted(DATASETS))
    check.add_argument("--data-dir", help="dataset folder (default: data/<name>)")
    check.add_argument("--expected-count", type=int)
    check.add_argument("--quick", action="store_true", help="sizes only; hash only the table")
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            manifest = prepare(args.name, args.out, from_hub=args.from_hub, from_files=args.from_files,
                               expected_count=args.expected_count)
            print(f"prepared {args.name}: {json.dumps(manifest['counts'])}")
        else:
            manifest = verify(args.name, args.data_dir, expected_count=args.expected_count, full=not args.quick)
            print(f"{args.name} ok: {json.dumps(manifest['counts'])} ({len(manifest['files'])} files)")
    except RespodiffError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
