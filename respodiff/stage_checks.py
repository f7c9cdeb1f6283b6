"""Checks the evaluate stage makes from files alone: are a store's images all there, is a result current.

Kept apart from respodiff/stages.py, which asks them, so that the stages file stays about the order of the work.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import ConfigError


def check_images_complete(benchmark: str, store: Path, images) -> None:
    """Every image is on disk and decodes; otherwise the true counts and a damaged path, before any evaluator loads."""
    from .generation import unfinished_images

    absent, damaged = unfinished_images(store, images)
    if not absent and not damaged:
        return
    parts = [f"{len(absent)} not generated yet"] if absent else []
    if damaged:
        parts.append(f"{len(damaged)} damaged (unreadable or truncated, e.g. {store / damaged[0]})")
    raise ConfigError(f"{benchmark}: {len(images) - len(absent) - len(damaged)} of {len(images)} images are present "
                      f"in {store}; {', '.join(parts)}. Run stage=generate (or stage=all): it renders the missing "
                      "images and replaces damaged ones, keeping every intact image")


def json_round(value: Any) -> Any:
    """The value as it reads back from JSON (tuples become lists), so it compares equal to a stored copy."""
    return json.loads(json.dumps(value, default=str))


def results_current(result_path: Path, manifest_path: Path, scored_with: dict) -> bool:
    try:
        if result_path.stat().st_mtime <= manifest_path.stat().st_mtime:
            return False  # images were (re)generated after the last evaluation
        return json.loads(result_path.read_text()).get("scored_with") == scored_with
    except (OSError, ValueError):
        return False
