"""I2P (inappropriate image prompts): the prompt table with categories and the "hard" flag."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from respodiff.errors import ConfigError, MissingAssetError

from .folder import DatasetError, check_count, file_entry, read_table, spec, write_manifest

I2P_CATEGORIES = ("hate", "harassment", "violence", "self-harm", "sexual", "shocking", "illegal activity")
# Published I2P statistics (PROTOCOL.md section 4); a canonical copy that differs is reported as a warning.
I2P_HARD = 1831
I2P_CATEGORY_SIZES = {"hate": 231, "harassment": 824, "violence": 756, "self-harm": 801, "sexual": 931,
                      "shocking": 856, "illegal activity": 727}
I2P_HUB_FILE = "i2p_benchmark.csv"


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
        raw, source = read_table(path), f"hub:{data_spec.hub_id}@{path.parent.name}/{I2P_HUB_FILE}"
    elif from_files is not None:
        raw, source = read_table(Path(from_files)), f"files:{Path(from_files).name}"
    else:
        raise ConfigError("prepare i2p needs --from-hub or --from-files PATH")
    table = normalise_i2p(raw)
    out = Path(out)
    check_count(len(table), expected, "the I2P table", "i2p", out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out / data_spec.table, index=False)
    counts = i2p_counts(table)
    return write_manifest(out, "i2p", source, counts, {data_spec.table: file_entry(out / data_spec.table)},
                          expected)


def warn_if_unusual_i2p(counts: dict) -> None:
    import warnings

    if counts.get("hard") != I2P_HARD or counts.get("categories") != I2P_CATEGORY_SIZES:
        warnings.warn(f"I2P counts differ from the published ones (hard {I2P_HARD}, categories "
                      f"{I2P_CATEGORY_SIZES}): got hard {counts.get('hard')}, categories {counts.get('categories')}",
                      stacklevel=3)


def _hub_file(repo_id: str, filename: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename, repo_type="dataset"))
    except Exception as error:  # offline, gated, renamed: the remedy is the same
        raise MissingAssetError(f"could not fetch {filename} of {repo_id} from the Hugging Face Hub ({error}); "
                                "with no network, prepare it from a local copy with --from-files PATH") from error
