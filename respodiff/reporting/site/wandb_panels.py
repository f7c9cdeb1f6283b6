"""The site's grids on W&B: one wandb.Image panel per grid (the same rows, columns and images as the page) and one
wandb.Table per page with a row per image (prompt, concept, seed, verdicts, image), so the online view matches the
static one.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from urllib.parse import unquote

from respodiff.reporting.grids import draw_grid


def image_rows(page, section: dict, group: dict, site: Path) -> list[dict]:
    rows = []
    for label, cells in zip(group["row_labels"], group["cells"]):
        for column, cell in zip(group["columns"], cells):
            if cell is None:
                continue
            rows.append({"experiment": page.name, "benchmark": section["benchmark"], "group": group["name"],
                         "method": label, "prompt_id": column["prompt_id"], "prompt": column["prompt"],
                         "concept": cell["concept"] or "none", "seed": str(column["seed"]),  # 64-bit: not a JS number
                         "verdicts": "; ".join(cell["verdicts"]), "image": str(site / unquote(cell["thumb"]))})
    return rows


def log_pages(logger, pages, site: str | Path) -> int:
    """Log every page's grids and image table; returns the number of grid panels logged."""
    site = Path(site)
    panels = 0
    with tempfile.TemporaryDirectory(prefix="respodiff-grids-") as scratch:
        for page in pages:
            rows = []
            for section in page.sections:
                for group in section["groups"]:
                    images = [[str(site / unquote(c["thumb"])) if c else None for c in line] for line in group["cells"]]
                    titles = [f"{c['prompt'][:28]}\nseed {c['seed']}" for c in group["columns"]]
                    name = f"{page.name}/{section['benchmark']}/{group['name']}"
                    png = draw_grid(group["row_labels"], titles, images, Path(scratch) / f"{panels}.png", cell_px=96,
                                    title=f"{page.title}: {section['benchmark']}, {group['name']}")
                    logger.log_image(f"grids/{name}", png, caption="rows = methods; columns = (prompt id, seed)")
                    panels += 1
                    rows += image_rows(page, section, group, site)
            if rows:
                logger.log_image_table(f"images/{page.name}", rows, image_column="image")
    return panels
