"""Image grids: rows = methods, columns = the same (prompt, seed) in every row.

Images are paired across stores by (prompt_id, seed), never by file order: every method's manifest derives the
seed from (benchmark, prompt_id, sample_index), so equal keys mean the same starting noise.
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


def select_cells(stores: dict[str, str | os.PathLike], prompt_filter: str, n_columns: int = 4) -> pd.DataFrame:
    """The (prompt_id, seed) keys done in every store whose prompt contains `prompt_filter` (case-insensitive).

    Returns one row per key with the prompt and, per store label, the image's absolute path.
    """
    if not stores:
        raise ValueError("select_cells needs at least one store")
    keyed = None
    for label, store in stores.items():
        m = _store_manifest(store)
        m = m[(m["status"] == DONE) & m["prompt"].str.contains(prompt_filter, case=False, regex=False)]
        m = m.assign(**{label: [str(Path(store) / p) for p in m["path"]]})[["prompt_id", "seed", "prompt", label]]
        m = m.drop_duplicates(["prompt_id", "seed"])
        keyed = m if keyed is None else keyed.merge(m.drop(columns="prompt"), on=["prompt_id", "seed"], how="inner")
    keyed = keyed.sort_values(["prompt_id", "seed"]).reset_index(drop=True)
    if keyed.empty:
        raise ValueError(f"no finished image whose prompt contains {prompt_filter!r} is present in every store "
                         f"({', '.join(stores)})")
    # Spread the columns over distinct prompts first (round-robin), so "doctor" shows several templates.
    keyed["_rank"] = keyed.groupby("prompt_id").cumcount()
    keyed = keyed.sort_values(["_rank", "prompt_id", "seed"]).head(n_columns).drop(columns="_rank")
    return keyed.reset_index(drop=True)


def _load(path: str, size: int) -> Image.Image | None:
    try:
        with Image.open(path) as im:
            return im.convert("RGB").resize((size, size))
    except OSError as exc:
        log.warning("grid: cannot read %s (%s); shown blank", path, exc)
        return None


def make_grid(stores: dict[str, str | os.PathLike], prompt_filter: str, out_path: str | os.PathLike,
              n_columns: int = 4, cell_px: int = 192, title: str | None = None) -> Path:
    """Write a PNG grid: one row per store (method label -> image store folder), one column per shared seed."""
    cells = select_cells(stores, prompt_filter, n_columns)
    n_rows, n_cols = len(stores), len(cells)
    inch = cell_px / 100
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(inch * n_cols + 1.2, inch * n_rows + 0.9), squeeze=False)
    for i, label in enumerate(stores):
        for j, cell in cells.iterrows():
            ax = axes[i][j]
            im = _load(cell[label], cell_px)
            if im is not None:
                ax.imshow(im)
            else:
                ax.text(0.5, 0.5, "missing", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"{cell['prompt'][:32]}\nseed {int(cell['seed'])}", fontsize=6)
            if j == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.suptitle(title or f'prompts containing "{prompt_filter}"', fontsize=10)
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path
