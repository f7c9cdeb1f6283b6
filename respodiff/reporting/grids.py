"""Image grids: rows = methods, columns = the same (prompt, seed) in every row.

Images are paired across stores by (prompt_id, seed), never by file order: every method's manifest derives the
seed from (benchmark, prompt_id, sample_index), so equal keys mean the same starting noise. `select_cells` and
`make_grid` serve the `grid` command (one PNG); `paired_keys` and `draw_grid` serve the report site and its W&B
panels (respodiff/reporting/site/).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from respodiff.errors import MissingAssetError  # noqa: E402
from respodiff.generation.plan import DONE  # noqa: E402
from respodiff.generation.store import MANIFEST_FILE, read_manifest  # noqa: E402

log = logging.getLogger(__name__)

_NEEDED = ("prompt_id", "prompt", "seed", "path", "status")
KEY = ["prompt_id", "seed"]


def _store_manifest(store: str | os.PathLike) -> pd.DataFrame:
    """The store's manifest, refused with a clear message when the store is missing or predates these columns."""
    path = Path(store) / MANIFEST_FILE
    if not path.exists():
        raise MissingAssetError(f"no image store at {store} ({path} missing): run the generate stage first")
    df = read_manifest(store)
    missing = [c for c in _NEEDED if c not in df.columns]
    if missing:
        raise MissingAssetError(f"{path} lacks column(s) {missing}")
    return df


def finished_images(store: str | os.PathLike) -> pd.DataFrame:
    """The store's finished images, one row per (prompt_id, seed), with absolute paths."""
    m = _store_manifest(store)
    m = m[m["status"] == DONE].drop_duplicates(KEY)
    return m.assign(path=[str(Path(store) / p) for p in m["path"]]).reset_index(drop=True)


def shared_keys(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The (prompt_id, seed) keys present in every frame, with the first frame's other columns, sorted by key."""
    keyed = None
    for frame in frames.values():
        keys = frame.drop_duplicates(KEY)
        keyed = keys if keyed is None else keyed.merge(keys[KEY], on=KEY, how="inner")
    if keyed is None:
        return pd.DataFrame(columns=KEY)
    return keyed.sort_values(KEY).reset_index(drop=True)


def paired_keys(frames: dict[str, pd.DataFrame], n_columns: int, order: str = "sample_index") -> pd.DataFrame:
    """Up to `n_columns` keys shared by every frame, spread diagonally over prompts and samples.

    Column j shows prompt j mod P at its (j mod k)-th sample (by `order`, when the first frame has it), so the
    columns cover several templates and, under balanced sampling (concept = sample index mod #concepts), every
    concept rather than the first sample of each prompt.
    """
    keys = shared_keys(frames)
    if keys.empty or n_columns <= 0:
        return keys.head(0)
    by = ["prompt_id", order] if order in keys.columns else KEY
    per_prompt = [part for _, part in keys.sort_values(by).groupby("prompt_id", sort=True)]
    chosen, used = [], set()
    j = 0
    while len(chosen) < min(n_columns, len(keys)):
        part = per_prompt[j % len(per_prompt)]
        for step in range(len(part)):
            row = part.iloc[(j + step) % len(part)]
            key = (row["prompt_id"], row["seed"])
            if key not in used:
                used.add(key)
                chosen.append(row)
                break
        j += 1
    return pd.DataFrame(chosen).reset_index(drop=True)


def select_cells(stores: dict[str, str | os.PathLike], prompt_filter: str, n_columns: int = 4) -> pd.DataFrame:
    """The (prompt_id, seed) keys done in every store whose prompt contains `prompt_filter` (case-insensitive).

    Returns one row per key with the prompt and, per store label, the image's absolute path.
    """
    if not stores:
        raise ValueError("select_cells needs at least one store")
    keyed = None
    for label, store in stores.items():
        m = finished_images(store)
        m = m[m["prompt"].str.contains(prompt_filter, case=False, regex=False)]
        m = m.rename(columns={"path": label})[["prompt_id", "seed", "prompt", label]]
        keyed = m if keyed is None else keyed.merge(m.drop(columns="prompt"), on=KEY, how="inner")
    keyed = keyed.sort_values(KEY).reset_index(drop=True)
    if keyed.empty:
        raise ValueError(f"no finished image whose prompt contains {prompt_filter!r} is present in every store "
                         f"({', '.join(stores)})")
    # Spread the columns over distinct prompts first (round-robin), so "doctor" shows several templates.
    keyed["_rank"] = keyed.groupby("prompt_id").cumcount()
    keyed = keyed.sort_values(["_rank", "prompt_id", "seed"]).head(n_columns).drop(columns="_rank")
    return keyed.reset_index(drop=True)


def _load(path: str | None, size: int) -> Image.Image | None:
    if path is None:
        return None
    try:
        with Image.open(path) as im:
            return im.convert("RGB").resize((size, size), Image.NEAREST if max(im.size) < size else Image.LANCZOS)
    except OSError as exc:
        log.warning("grid: cannot read %s (%s); shown blank", path, exc)
        return None


def draw_grid(row_labels: list[str], column_titles: list[str], images: list[list[str | None]],
              out_path: str | os.PathLike, cell_px: int = 192, title: str = "") -> Path:
    """Write a PNG grid: images[i][j] is row i's image for column j (None: drawn as "missing")."""
    n_rows, n_cols = len(row_labels), len(column_titles)
    inch = cell_px / 100
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(inch * n_cols + 1.2, inch * n_rows + 0.9), squeeze=False)
    for i, label in enumerate(row_labels):
        for j, column in enumerate(column_titles):
            ax = axes[i][j]
            im = _load(images[i][j], cell_px)
            if im is not None:
                ax.imshow(im)
            else:
                ax.text(0.5, 0.5, "missing", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(column, fontsize=6)
            if j == 0:
                ax.set_ylabel(label, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def make_grid(stores: dict[str, str | os.PathLike], prompt_filter: str, out_path: str | os.PathLike,
              n_columns: int = 4, cell_px: int = 192, title: str | None = None) -> Path:
    """Write a PNG grid: one row per store (method label -> image store folder), one column per shared seed."""
    cells = select_cells(stores, prompt_filter, n_columns)
    titles = [f"{cell['prompt'][:32]}\nseed {int(cell['seed'])}" for _, cell in cells.iterrows()]
    images = [[cell[label] for _, cell in cells.iterrows()] for label in stores]
    return draw_grid(list(stores), titles, images, out_path, cell_px, title or f'prompts containing "{prompt_filter}"')
