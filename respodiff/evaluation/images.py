"""Checks on a finished image manifest before anything is scored, and strict joins by explicit id.

Scores must never be matched to prompts or labels by listing order (one public I2P script joined labels by worker
completion order); every join here is on an id and fails loudly when ids do not line up.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import pandas as pd
from PIL import Image

from respodiff.errors import MissingAssetError, RespodiffError

MANIFEST_COLUMNS = ("image_id", "prompt_id", "prompt", "path", "status")
_SHOW = 5


class EvaluationDataError(RespodiffError):
    """Images, scores and prompt labels do not line up by id (duplicates, unknown or missing ids)."""


def _preview(items: Iterable[object]) -> str:
    items = list(items)
    shown = ", ".join(repr(item) for item in items[:_SHOW])
    return shown + (f", ... ({len(items)} in all)" if len(items) > _SHOW else "")


def require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise EvaluationDataError(f"{what} lacks columns {missing}; it has {list(frame.columns)}")


def require_unique(frame: pd.DataFrame, column: str, what: str) -> None:
    duplicated = frame[column][frame[column].duplicated()]
    if len(duplicated):
        raise EvaluationDataError(f"{what} has duplicate {column} values: {_preview(duplicated.unique())}")


def require_complete(
    images: pd.DataFrame,
    prompt_ids: Sequence[str],
    *,
    benchmark: str,
    per_prompt: int | None = None,
) -> pd.DataFrame:
    """Fail unless every prompt has its images, all done and on disk; return the manifest with string ids.

    Counting comes first so a half-generated store can never yield a number (FID of 29,000 images is not FID-30K).
    """
    require_columns(images, MANIFEST_COLUMNS, f"the {benchmark} image manifest")
    images = images.copy()
    images["image_id"] = images["image_id"].astype(str)
    images["prompt_id"] = images["prompt_id"].astype(str)
    require_unique(images, "image_id", f"the {benchmark} image manifest")

    expected = pd.Index([str(p) for p in prompt_ids])
    unknown = pd.Index(images["prompt_id"].unique()).difference(expected)
    if len(unknown):
        raise EvaluationDataError(
            f"the {benchmark} manifest has images of prompts the benchmark does not define: {_preview(unknown)}"
        )
    per = images.groupby("prompt_id").size().reindex(expected, fill_value=0)
    target = per_prompt if per_prompt is not None else int(per.max())
    short = per[per != target]
    not_done = images.loc[images["status"] != "done", "image_id"]
    absent = images.loc[[not os.path.isfile(str(p)) for p in images["path"]], "image_id"]
    problems = []
    if target == 0:
        problems.append("the manifest has no images")
    if len(short):
        problems.append(
            f"{len(short)} of {len(expected)} prompts do not have {target} images "
            f"(e.g. {_preview(f'{k}: {v}' for k, v in short.items())})"
        )
    if len(not_done):
        problems.append(f"{len(not_done)} images are not done: {_preview(not_done)}")
    if len(absent):
        problems.append(f"{len(absent)} image files are missing: {_preview(absent)}")
    if problems:
        raise MissingAssetError(
            f"refusing to evaluate {benchmark}: expected {len(expected)} prompts x {target} images = "
            f"{len(expected) * target}, found {len(images)}; " + "; ".join(problems)
            + ". Finish generation first (run.py ... stage=generate resumes where it stopped)."
        )
    return images


def join_one_to_one(left: pd.DataFrame, right: pd.DataFrame, on: str, what: str) -> pd.DataFrame:
    """Inner join that insists both sides hold exactly the same ids, each once."""
    require_unique(left, on, f"{what} (left side)")
    require_unique(right, on, f"{what} (right side)")
    left_ids, right_ids = pd.Index(left[on].astype(str)), pd.Index(right[on].astype(str))
    only_left, only_right = left_ids.difference(right_ids), right_ids.difference(left_ids)
    if len(only_left) or len(only_right):
        raise EvaluationDataError(
            f"{what}: {on} values do not match; only on the left: {_preview(only_left) or 'none'}; "
            f"only on the right: {_preview(only_right) or 'none'}"
        )
    left = left.assign(**{on: left_ids})
    right = right.assign(**{on: right_ids})
    return left.merge(right, on=on, how="inner", validate="one_to_one")


def join_many_to_one(left: pd.DataFrame, right: pd.DataFrame, on: str, what: str) -> pd.DataFrame:
    """Attach `right`'s columns to every row of `left`; every id of `left` must exist in `right` exactly once."""
    require_unique(right, on, f"{what} (lookup side)")
    left = left.assign(**{on: left[on].astype(str)})
    right = right.assign(**{on: right[on].astype(str)})
    unknown = pd.Index(left[on].unique()).difference(pd.Index(right[on]))
    if len(unknown):
        raise EvaluationDataError(f"{what}: {on} values without a match: {_preview(unknown)}")
    return left.merge(right, on=on, how="left", validate="many_to_one")


def open_rgb(path: str | os.PathLike) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")
