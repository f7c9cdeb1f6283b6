"""COCO-30K: captions with their reference images, copied byte for byte (re-encoding JPEGs would move FID)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pandas as pd

from respodiff.errors import ConfigError, MissingAssetError

from .folder import DatasetError, check_count, file_entry, read_table, spec, write_manifest

_CAPTION_COLUMNS = ("caption", "captions", "prompt", "text")
_FILE_COLUMNS = ("file_name", "filename", "file", "image_path", "path", "image")
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


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
        files[relative] = file_entry(target)
        records.append({"prompt_id": prompt_id, "caption": caption, "caption_index": i, "file": relative,
                        "source_file": source_name})
    check_count(len(records), expected, "the COCO captions", "coco30k", out)
    table = pd.DataFrame.from_records(records)
    table.to_parquet(out / data_spec.table, index=False)
    files[data_spec.table] = file_entry(out / data_spec.table)
    return write_manifest(out, "coco30k", source, {"captions": len(table), "images": len(table)}, files, expected)


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
    table = read_table(table_path)
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
