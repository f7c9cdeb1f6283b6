"""The evaluator card and the run provenance of every number on a page, as one record per (run, benchmark).

Both come from the results JSON behind a table cell (docs/CONTRACTS.md): the evaluator record (classifier
versions, file hashes, thresholds), the settings it scored with, image and metric counts, the git hash, package
versions, the run's overrides (its command) and its resolved config. A page lists the headline facts and links the
whole record as JSON.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field

from respodiff.reporting.selection import ResultRef
from respodiff.reporting.site.sources import display_path
from respodiff.reporting.store import read_result, safe_dirname


@dataclass
class RunCard:
    run_id: str
    benchmark: str
    rows: list[str]  # table rows this result fills
    command: str
    git_hash: str
    created: str
    n_images: int | None
    facts: list[tuple[str, str]]  # evaluator card, flattened, for the page
    record: dict = field(repr=False)  # everything, for the linked JSON
    file: str = ""  # the linked JSON, relative to the page

    @property
    def key(self) -> tuple[str, str]:
        return self.run_id, self.benchmark


def command_of(result: dict) -> str:
    overrides = [str(o) for o in result.get("overrides") or []]
    return shlex.join(["python", "run.py", *overrides]) if overrides else ""


def _flatten(value, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        out = []
        for key, inner in value.items():
            out += _flatten(inner, f"{prefix}{key}.")
        return out
    if isinstance(value, (list, tuple)):
        value = ", ".join(map(str, value))
    return [(prefix[:-1], "–" if value is None else str(value))]


def build_card(ref: ResultRef, rows: list[str]) -> RunCard:
    result = read_result(ref.source)
    evaluator = result.get("evaluator") or {}
    scored_with = (result.get("scored_with") or {}).get("benchmark") or {}
    metric_versions = {}
    counts = {}
    for m in result["metrics"]:
        if m.get("group") is None:
            metric_versions[m["name"]] = str(m.get("version") or "")
            if m.get("n") is not None:
                counts[m["name"]] = m["n"]
    facts = _flatten({"evaluator": evaluator})
    facts += [(f"settings.{k}", v) for k, v in _flatten(scored_with) if not k.startswith("evaluators.")]
    facts += _flatten({"metric versions": metric_versions, "images counted": counts})
    record = {
        "run": ref.run_id,
        "benchmark": ref.benchmark,
        "table rows": rows,
        "command": command_of(result),
        "reproduced_by": result.get("reproduced_by"),
        "git_hash": result.get("git_hash"),
        "created": result.get("created"),
        "versions": result.get("versions"),
        "n_images": result.get("n_images"),
        "evaluator": evaluator,
        "scored_with": result.get("scored_with"),
        "metrics": result["metrics"],
        "rescored": result.get("rescored"),
        "config": result.get("config"),
        "source": display_path(ref.source),
    }
    return RunCard(ref.run_id, ref.benchmark, rows, record["command"], str(result.get("git_hash") or ""),
                   str(result.get("created") or ""), result.get("n_images"), facts,
                   {k: v for k, v in record.items() if v is not None})


def card_file_name(card: RunCard) -> str:
    # The benchmark name comes from a results file too: made file-safe with the run id, so no name leaves runs/.
    return f"runs/{safe_dirname(card.run_id.replace('/', '__') + '__' + card.benchmark)}.json"


def card_json(card: RunCard) -> str:
    return json.dumps(card.record, indent=2, sort_keys=False, default=str) + "\n"
