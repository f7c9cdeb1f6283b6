"""The image grids of one page: per benchmark and per profession (or I2P category), rows = the table's methods,
columns = the same (prompt id, seed) in every row, each image with its classifier verdicts and a full-size link.

Sections are plain dicts (the page template and the page's grids.json read them). A site outside the outputs
folder (the committed results/site) keeps only thumbnails; when a later build finds no images locally (a fresh
clone), a section is reused from the previous grids.json if every run it shows is still the one the table uses.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from urllib.parse import quote

from respodiff.io import write_json_atomically
from respodiff.reporting.grids import KEY, paired_keys
from respodiff.reporting.selection import select
from respodiff.reporting.site.sources import (
    GROUP_COLUMNS,
    display_path,
    find_run_images,
    group_column,
    group_values,
    has_grids,
    in_group,
    verdict_lines,
)
from respodiff.reporting.site.thumbs import Thumbnails

log = logging.getLogger(__name__)

GRIDS_FILE = "grids.json"


def href(path: str) -> str:
    """A relative path as a URL (run folders carry '=', ',' and '[]'; '#', '?' and '%' must not cut it short)."""
    return quote(path, safe="/=,+@-._~")


def _row_sources(table, refs, benchmark: str, outputs: list[Path]) -> list[dict]:
    cols = [c for c in table.spec.columns if c.benchmark == benchmark]
    rows = []
    for row in table.rows:
        if row.paper_only or row.seeds:
            continue  # a seeds row averages runs; its seed-0 run is the plain row's
        chosen, _ = select(refs, {**row.match, **cols[0].match}, benchmark)
        if chosen is None:
            continue
        images = find_run_images(chosen, outputs)
        entry = {"label": row.label, "run_id": chosen.run_id, "created": chosen.created, "found": images is not None,
                 "store": display_path(images.store) if images else "", "note": "", "_images": images}
        if images is None:
            entry["note"] = "images not found locally"
        elif not images.has_verdicts:
            entry["note"] = "no per-image scores beside these images: verdicts not shown"
        elif images.evaluated and images.evaluated != chosen.created:
            entry["note"] = (f"images and verdicts from {entry['store']} (evaluated {images.evaluated}); the table's "
                             f"number from a result made {chosen.created}")
        rows.append(entry)
    return rows


def _cell(record, thumbs: Thumbnails, site_dir: Path, self_contained: bool) -> dict | None:
    if record is None:
        return None
    try:
        thumb = thumbs.get(record["path"])
    except OSError as exc:
        log.warning("cannot read %s (%s); left out of the grid", record["path"], exc)
        return None
    if thumb.is_full_size:
        full = thumb.path
    elif not self_contained:
        full = Path(os.path.relpath(record["path"], site_dir)).as_posix()
    else:
        full = None
    concept = str(record.get("concept") or "")
    return {"thumb": href(thumb.path), "full": href(full) if full else None, "width": thumb.width,
            "height": thumb.height, "path": display_path(record["path"]), "image_id": str(record.get("image_id", "")),
            "concept": "" if concept in ("", "none") else concept, "verdicts": verdict_lines(record)}


def _section(benchmark: str, rows: list[dict], n_columns: int, thumbs: Thumbnails, site_dir: Path,
             self_contained: bool) -> dict:
    found = [r for r in rows if r["found"]]
    frames = {r["label"]: r["_images"].frame for r in found}
    column = next((c for c in (group_column(f) for f in frames.values()) if c), None)
    section = {"benchmark": benchmark, "group_heading": GROUP_COLUMNS.get(column, ""), "reused": False, "message": "",
               "rows": [{k: v for k, v in r.items() if k != "_images"} for r in rows], "groups": []}
    if column is None:
        if frames:
            section["message"] = "the images carry no profession or category to group them by"
        return section
    groups = sorted({g for f in frames.values() if column in f.columns for g in group_values(f, column)})
    for group in groups:
        parts = {label: in_group(f, column, group) for label, f in frames.items()}
        keys = paired_keys(parts, n_columns)
        if keys.empty:
            continue
        by_key = {label: {(p, s): rec for p, s, rec in zip(f["prompt_id"], f["seed"], f.to_dict("records"))}
                  for label, f in parts.items()}
        columns = [{"prompt": str(k["prompt"]), "prompt_id": str(k["prompt_id"]), "seed": int(k["seed"])}
                   for k in keys.to_dict("records")]
        cells = [[_cell(by_key[label].get((c["prompt_id"], c["seed"])), thumbs, site_dir, self_contained)
                  for c in columns] for label in frames]
        section["groups"].append({"name": group, "columns": columns, "row_labels": list(frames), "cells": cells})
    return section


def _reusable(previous: dict | None, rows: list[dict], site_dir: Path) -> bool:
    """Whether an earlier build's section shows exactly the runs (and evaluations) the table uses now."""
    if not previous or not previous.get("groups"):
        return False
    now = {r["label"]: (r["run_id"], r["created"]) for r in rows}
    shown = [r for r in previous["rows"] if r.get("found")]
    if not shown or any(now.get(r["label"]) != (r["run_id"], r["created"]) for r in shown):
        return False
    return all((site_dir / cell["thumb"]).is_file() for g in previous["groups"] for line in g["cells"]
               for cell in line if cell)


def page_grids(table, refs, outputs: list[Path], thumbs: Thumbnails, page_dir: Path, site_dir: Path,
               n_columns: int, self_contained: bool) -> list[dict]:
    """Every grid section of a page (one per Winobias/I2P-style benchmark of its table), written to grids.json."""
    previous = {}
    cache = page_dir / GRIDS_FILE
    if cache.is_file():
        try:
            previous = {s["benchmark"]: s for s in json.loads(cache.read_text(encoding="utf-8"))["sections"]}
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s unreadable (%s); grids rebuilt from local images only", cache, exc)
    sections = []
    for benchmark in dict.fromkeys(c.benchmark for c in table.spec.columns):
        if not has_grids(benchmark):
            continue
        rows = _row_sources(table, refs, benchmark, outputs)
        if not rows:
            continue
        if not any(r["found"] for r in rows) and _reusable(previous.get(benchmark), rows, site_dir):
            section = {**previous[benchmark], "reused": True}
            thumbs.keep(cell["thumb"] for g in section["groups"] for line in g["cells"] for cell in line if cell)
        else:
            section = _section(benchmark, rows, n_columns, thumbs, site_dir, self_contained)
        sections.append(section)
    # Atomic: grids.json marks a folder as a generated page (a later build may delete it) and is reused as is.
    write_json_atomically(cache, {"sections": sections}, indent=1, sort_keys=True)
    return sections


__all__ = ["GRIDS_FILE", "KEY", "href", "page_grids"]
