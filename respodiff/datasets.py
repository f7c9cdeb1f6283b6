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
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from respodiff.errors import ConfigError, MissingAssetError, RespodiffError
from respodiff.evaluation.q16_prompts import sha256_file

MANIFEST = "manifest.json"
SCHEMA = "respodiff.dataset/1"
I2P_CATEGORIES = ("hate", "harassment", "violence", "self-harm", "sexual", "shocking", "illegal activity")
# Published I2P statistics (PROTOCOL.md section 4); a canonical copy that differs is reported as a warning.
I2P_HARD = 1831
I2P_CATEGORY_SIZES = {"hate": 231, "harassment": 824, "violence": 756, "self-harm": 801, "sexual": 931,
                      "shocking": 856, "illegal activity": 727}
_CAPTION_COLUMNS = ("caption", "captions", "prompt", "text")
_FILE_COLUMNS = ("file_name", "filename", "file", "image_path", "path", "image")
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
I2P_HUB_FILE = "i2p_benchmark.csv"


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


def _file_entry(path: Path) -> dict:
    return {"sha256": sha256_file(path), "size": path.stat().st_size}


def _write_manifest(folder: Path, name: str, source: str, counts: dict, files: dict[str, dict],
                    expected_count: int) -> dict:
    manifest = {"schema": SCHEMA, "name": name, "source": source,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "expected_count": expected_count, "counts": counts, "files": files}
    partial = folder / (MANIFEST + ".partial")
    partial.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(partial, folder / MANIFEST)  # the manifest appears last, so its presence means "complete"
    return manifest


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise MissingAssetError(f"{path} does not exist")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix in (".csv", ".tsv"):
        return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",", keep_default_na=False)
    raise ConfigError(f"cannot read {path}: expected .parquet, .csv or .tsv")


def _check_count(found: int, expected: int, what: str, name: str, folder: Path) -> None:
    if found != expected:
        raise DatasetError(f"{what}: found {found} entries, expected {expected}. Rebuild it with: "
                           f"{prepare_command(name, folder)}")


# --- I2P ------------------------------------------------------------------------------------------------------

def parse_categories(value: object) -> list[str]:
    if value is None or (isinstance(value, float) and value != value):
        return []
    return [part.strip().lower() for part in str(value).split(",") if part.strip()]


def normalise_i2p(raw: pd.DataFrame) -> pd.DataFrame:
    """I2P rows with a stable string prompt_id (the row's position in the published table unless one is given)."""
    missing = [c for c in ("prompt", "categories", "hard") if c not in raw.columns]
    if missing:
        raise DatasetError(f"the I2P table lacks columns {missing}; it has {list(raw.columns)}")
    table = raw.reset_index(drop=True).copy()
    if "prompt_id" not in table.columns:
        table.insert(0, "prompt_id", [f"{i:05d}" for i in range(len(table))])
    table["prompt_id"] = table["prompt_id"].astype(str)
    table["prompt"] = table["prompt"].fillna("").astype(str)
    table["categories"] = table["categories"].map(lambda v: ", ".join(parse_categories(v)))
    table["hard"] = pd.to_numeric(table["hard"]).astype(bool)
    unknown = sorted({c for v in table["categories"] for c in parse_categories(v)} - set(I2P_CATEGORIES))
    if unknown:
        raise DatasetError(f"the I2P table has unknown categories {unknown}; known: {list(I2P_CATEGORIES)}")
    if table["prompt_id"].duplicated().any():
        raise DatasetError("the I2P table has duplicate prompt_id values")
    return table


def i2p_counts(table: pd.DataFrame) -> dict:
    sizes = {c: 0 for c in I2P_CATEGORIES}
    for value in table["categories"]:
        for category in parse_categories(value):
            sizes[category] += 1
    return {"prompts": len(table), "hard": int(table["hard"].sum()), "categories": sizes,
            "empty_prompts": int((table["prompt"].str.strip() == "").sum())}


def prepare_i2p(out: str | os.PathLike, *, from_hub: bool = False, from_files: str | os.PathLike | None = None,
                expected_count: int | None = None) -> dict:
    data_spec = spec("i2p")
    expected = expected_count if expected_count is not None else data_spec.expected_count
    if from_hub:
        # The Hub dataset is one CSV file; huggingface_hub (a core dependency) fetches it without `datasets`.
        path = _hub_file(data_spec.hub_id, I2P_HUB_FILE)
        raw, source = _read_table(path), f"hub:{data_spec.hub_id}@{path.parent.name}/{I2P_HUB_FILE}"
    elif from_files is not None:
        raw, source = _read_table(Path(from_files)), f"files:{Path(from_files).name}"
    else:
        raise ConfigError("prepare i2p needs --from-hub or --from-files PATH")
    table = normalise_i2p(raw)
    out = Path(out)
    _check_count(len(table), expected, "the I2P table", "i2p", out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out / data_spec.table, index=False)
    counts = i2p_counts(table)
    return _write_manifest(out, "i2p", source, counts, {data_spec.table: _file_entry(out / data_spec.table)},
                           expected)


# --- COCO-30K -------------------------------------------------------------------------------------------------

def _pick(columns: Iterable[str], candidates: Sequence[str], what: str) -> str:
    columns = list(columns)
    lowered = {c.lower(): c for c in columns}
    for candidate in candidates:
        if candidate in lowered:
            return lowered[candidate]
    raise DatasetError(f"no {what} column among {columns}; expected one of {list(candidates)}")


def _coco_rows_from_files(path: Path) -> Iterator[tuple[str, str, bytes | Path]]:
    """(source name, caption, image file) from a captions table and the images beside it."""
    if path.is_dir():
        tables = sorted(p for p in path.iterdir() if p.suffix in (".csv", ".tsv", ".parquet"))
        if len(tables) != 1:
            raise DatasetError(f"{path} should hold exactly one captions table (.csv/.tsv/.parquet), found "
                               f"{[t.name for t in tables]}; pass the table itself with --from-files")
        table_path, root = tables[0], path
    else:
        table_path, root = path, path.parent
    table = _read_table(table_path)
    caption_col = _pick(table.columns, _CAPTION_COLUMNS, "caption")
    others = [c for c in table.columns if c != caption_col]
    if any(c.lower() in _FILE_COLUMNS for c in others):
        file_names = table[_pick(others, _FILE_COLUMNS, "image file")].astype(str).tolist()
    else:
        # The public scripts' export: prompts.csv with captions only, row i's image saved as "<i>.jpg".
        file_names = [_indexed_image(root, i) for i in range(len(table))]
    for file_name, caption in zip(file_names, table[caption_col].astype(str)):
        image = root / file_name
        if not image.is_file():
            raise MissingAssetError(f"the captions table names {file_name}, which is not in {root}")
        yield file_name, caption, image


def _indexed_image(root: Path, index: int) -> str:
    for suffix in sorted(_IMAGE_SUFFIXES):
        if (root / f"{index}{suffix}").is_file():
            return f"{index}{suffix}"
    raise MissingAssetError(f"the captions table has no file column and {root} has no image named {index}.<ext> "
                            f"for row {index}; add a file_name column naming each row's image")


def _coco_rows_from_hub(hub_id: str) -> Iterator[tuple[str, str, bytes | Path]]:
    dataset = _hub_dataset(hub_id)  # first: it turns a missing `datasets` package into a clear error
    from datasets import Image as HubImage

    image_col = _pick(dataset.column_names, ("image", "img", "jpg"), "image")
    caption_col = _pick(dataset.column_names, _CAPTION_COLUMNS, "caption")
    # decode=False hands over the stored JPEG bytes, so reference images are not re-encoded.
    dataset = dataset.cast_column(image_col, HubImage(decode=False))
    for i, row in enumerate(dataset):
        caption = row[caption_col]
        caption = caption[0] if isinstance(caption, list) else caption
        image = row[image_col]
        content = image["bytes"] if image.get("bytes") is not None else Path(image["path"])
        yield image.get("path") or f"{i:05d}.jpg", str(caption), content


def _image_suffix(name: str, content: bytes | Path) -> str:
    suffix = Path(name).suffix.lower()
    if suffix in _IMAGE_SUFFIXES:
        return suffix
    from io import BytesIO

    from PIL import Image

    with Image.open(BytesIO(content) if isinstance(content, bytes) else content) as image:
        return "." + (image.format or "png").lower().replace("jpeg", "jpg")


def prepare_coco(out: str | os.PathLike, *, from_hub: bool = False, from_files: str | os.PathLike | None = None,
                 expected_count: int | None = None) -> dict:
    data_spec = spec("coco30k")
    expected = expected_count if expected_count is not None else data_spec.expected_count
    if from_hub:
        rows, source = _coco_rows_from_hub(data_spec.hub_id), f"hub:{data_spec.hub_id}"
    elif from_files is not None:
        rows, source = _coco_rows_from_files(Path(from_files)), f"files:{Path(from_files).name}"
    else:
        raise ConfigError("prepare coco30k needs --from-hub or --from-files PATH")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    records, files = [], {}
    for i, (source_name, caption, content) in enumerate(rows):
        prompt_id = f"{i:05d}"
        relative = f"images/{prompt_id}{_image_suffix(source_name, content)}"
        target = out / relative
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            shutil.copyfile(content, target)
        files[relative] = _file_entry(target)
        records.append({"prompt_id": prompt_id, "caption": caption, "caption_index": i, "file": relative,
                        "source_file": source_name})
    _check_count(len(records), expected, "the COCO captions", "coco30k", out)
    table = pd.DataFrame.from_records(records)
    table.to_parquet(out / data_spec.table, index=False)
    files[data_spec.table] = _file_entry(out / data_spec.table)
    return _write_manifest(out, "coco30k", source, {"captions": len(table), "images": len(table)}, files, expected)


def _hub_file(repo_id: str, filename: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename, repo_type="dataset"))
    except Exception as error:  # offline, gated, renamed: the remedy is the same
        raise MissingAssetError(f"could not fetch {filename} of {repo_id} from the Hugging Face Hub ({error}); "
                                "with no network, prepare it from a local copy with --from-files PATH") from error


def _hub_dataset(hub_id: str):
    try:
        import datasets
    except ImportError as error:
        raise MissingAssetError("--from-hub needs the optional 'datasets' package: pip install "
                                "'respodiff[datasets]' (or use --from-files with a local copy)") from error
    try:
        return datasets.load_dataset(hub_id, split="train")
    except Exception as error:  # offline, gated, renamed: the remedy is the same
        raise MissingAssetError(f"could not load {hub_id} from the Hugging Face Hub ({error}); with no network, "
                                "prepare it from a local copy with --from-files PATH") from error


def prepare(name: str, out: str | os.PathLike | None = None, **kwargs) -> dict:
    out = out if out is not None else default_folder(name)
    return {"i2p": prepare_i2p, "coco30k": prepare_coco}[spec(name).name](out, **kwargs)


# --- verification -------------------------------------------------------------------------------------------------

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
    _check_count(len(table), expected, f"dataset {name!r} at {folder}", name, folder)
    _check_count(manifest["counts"][data_spec.count_key], expected, f"the manifest of {name!r}", name, folder)
    if name == "coco30k":
        unlisted = sorted(set(table["file"]) - set(files))
        if unlisted:
            raise DatasetError(f"captions name images the manifest does not list: {unlisted[:3]}. Rebuild with: "
                               f"{prepare_command(name, folder)}")
    if name == "i2p" and expected == data_spec.expected_count:
        _warn_if_unusual_i2p(manifest["counts"])
    return manifest


def _warn_if_unusual_i2p(counts: dict) -> None:
    import warnings

    if counts.get("hard") != I2P_HARD or counts.get("categories") != I2P_CATEGORY_SIZES:
        warnings.warn(f"I2P counts differ from the published ones (hard {I2P_HARD}, categories "
                      f"{I2P_CATEGORY_SIZES}): got hard {counts.get('hard')}, categories {counts.get('categories')}",
                      stacklevel=3)


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


# --- CLI ------------------------------------------------------------------------------------------------------

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


if __name__ == "__main__":
    sys.exit(main())
