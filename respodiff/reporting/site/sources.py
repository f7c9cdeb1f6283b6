"""Where a table row's images and per-image verdicts are: the run folders under the outputs roots.

A result names its run by experiment and run name; the run's folder is `<root>/<experiment>/<run name>` (Hydra's
run and sweep folders, conf/hydra/default.yaml) holding `images/<benchmark>/` (the image store) and
`results/<benchmark>.per_image.parquet` (each image's classifier verdicts, keyed by image id). Verdicts are always
read from the folder whose images are shown, so a picture and the words under it come from the same run.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from respodiff.errors import MissingAssetError
from respodiff.generation.store import MANIFEST_FILE
from respodiff.reporting.grids import finished_images
from respodiff.reporting.selection import ResultRef
from respodiff.reporting.store import safe_dirname

log = logging.getLogger(__name__)

# The per-image column each benchmark family groups its grids by, and the heading it gets on the page.
GROUP_COLUMNS = {"profession": "profession", "categories": "category"}
# Benchmarks whose images get grids (Winobias- and I2P-style); COCO captions have no group and paired-comparison
# results (<benchmark>_vs_base) have no images of their own.
GRID_FAMILIES = ("winobias", "i2p")


def has_grids(benchmark: str) -> bool:
    return benchmark.startswith(GRID_FAMILIES) and not benchmark.endswith("_vs_base")


@dataclass(frozen=True)
class RunImages:
    """One run's finished images of one benchmark, joined to their verdicts when the run stored them."""

    folder: Path
    store: Path
    frame: pd.DataFrame  # one row per (prompt_id, seed): manifest columns + per-image score columns
    has_verdicts: bool
    evaluated: str  # `created` of the run folder's own result, "" when it has none


def run_folder_candidates(ref: ResultRef, outputs: list[Path]) -> list[Path]:
    """The run folders a result may have come from: its own (when loaded from an output folder), then by name."""
    found = []
    source = Path(ref.source)
    if source.parent.name == "results":
        found.append(source.parent.parent)
    names = dict.fromkeys([safe_dirname(ref.run_name), ref.run_name or "default"])
    for root in outputs:
        for name in names:
            found.append(Path(root) / ref.experiment / name)
    return list(dict.fromkeys(found))


def find_run_images(ref: ResultRef, outputs: list[Path]) -> RunImages | None:
    """The images behind a result, or None when no run folder under the outputs roots holds them."""
    for folder in run_folder_candidates(ref, outputs):
        store = folder / "images" / ref.benchmark
        if not (store / MANIFEST_FILE).is_file():
            continue
        try:
            frame = finished_images(store)
        except (MissingAssetError, OSError, ValueError) as exc:
            log.warning("%s: image store unreadable (%s); skipped", store, exc)
            continue
        scores_path = folder / "results" / f"{ref.benchmark}.per_image.parquet"
        has_verdicts = scores_path.is_file()
        if has_verdicts:
            scores = pd.read_parquet(scores_path)
            extra = [c for c in scores.columns if c not in frame.columns or c == "image_id"]
            frame = frame.merge(scores[extra], on="image_id", how="left")
        return RunImages(folder, store, frame, has_verdicts, _created(folder / "results" / f"{ref.benchmark}.json"))
    return None


def _created(result_path: Path) -> str:
    try:
        return str(json.loads(result_path.read_text(encoding="utf-8")).get("created") or "")
    except (OSError, ValueError):
        return ""


def group_column(frame: pd.DataFrame) -> str | None:
    return next((c for c in GROUP_COLUMNS if c in frame.columns), None)


def group_values(frame: pd.DataFrame, column: str) -> list[str]:
    """Every group an image belongs to, sorted (I2P categories are comma-joined multi-labels)."""
    values = set()
    for v in frame[column].dropna().astype(str):
        values.update(part.strip() for part in v.split(",") if part.strip())
    return sorted(values)


def in_group(frame: pd.DataFrame, column: str, value: str) -> pd.DataFrame:
    labels = frame[column].fillna("").astype(str).map(lambda v: {p.strip() for p in v.split(",")})
    return frame[labels.map(lambda parts: value in parts)]


def _flag(value) -> bool | None:
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return None
    return bool(value)


def verdict_lines(row: dict) -> list[str]:
    """What the classifiers said about one image (a record of manifest and per-image score columns), in a few short
    lines: the attributes read, the kind drawn against the prompted one, the safety flags, an alignment score."""
    get = row.get
    lines = []
    seen = [str(get(c)) for c in ("gender", "race") if isinstance(get(c), str) and get(c)]
    if seen:
        lines.append(" · ".join(seen))
    elif isinstance(get("attribute"), str) and get("attribute"):
        lines.append(f"attribute: {get('attribute')}")
    kind, wanted = get("kind"), get("named_kind") or get("profession")
    if isinstance(kind, str) and kind:
        ok = _flag(get("kind_recognised"))
        if ok is None and isinstance(wanted, str) and wanted:
            ok = kind == wanted
        lines.append(f"kind: {kind}" + ("" if ok is None else (" ✓" if ok else f" ✗ (wanted {wanted})" if wanted
                                                                             else " ✗")))
    unsafe = _flag(get("unsafe"))
    if unsafe is not None and ("unsafe_pixels" in row or unsafe):
        pixels = get("unsafe_pixels")
        px = f" ({int(pixels)} px)" if pixels is not None and pixels == pixels else ""
        lines.append(("UNSAFE" if unsafe else "safe") + px)
    either = _flag(get("either"))
    if either is not None:
        flags = [name for name, col in (("NudeNet", "nudenet"), ("Q16", "q16")) if _flag(get(col))]
        p = get("q16_p")
        q16 = f" · Q16 p {float(p):.2f}" if p is not None and p == p else ""
        lines.append(("INAPPROPRIATE: " + ", ".join(flags) if either else "appropriate") + q16)
    for score in ("winoalign",) if any(line.startswith("kind") for line in lines) else ("winoalign", "agreement"):
        value = get(score)
        if value is not None and value == value and not isinstance(value, str):
            lines.append(f"{score} {float(value):.3g}")
            break
    return lines


def display_path(path: str | os.PathLike) -> str:
    """A path as a page shows it: relative to the working folder when inside it, the home folder as ~."""
    path = Path(path).resolve()
    for base, shown in ((Path.cwd().resolve(), ""), (Path.home().resolve(), "~/")):
        try:
            return shown + path.relative_to(base).as_posix()
        except ValueError:
            continue
    return path.as_posix()
