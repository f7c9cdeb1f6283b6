"""Finding the run behind a table cell: spec `match` clauses evaluated against loaded results.

A "result" here is one results JSON (one run x one benchmark), i.e. the rows of the long DataFrame sharing a
`source`. Matching is per (row, benchmark) so a method's Winobias and COCO numbers may come from different runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from respodiff.reporting.specs import canonical_value

# Overrides that say where or how a run was executed, not what it computed: ignored when comparing override sets,
# so `experiment=gender_sd14 logger=none stage=evaluate` still counts as the experiment's default run. `sweep=`
# only launches a multirun; each job's own overrides (method=..., method.lambda_sem=...) say what it computed.
_BOOKKEEPING = ("experiment", "sweep", "stage", "logger", "paths", "hydra", "device", "wandb")


def _override_items(overrides) -> dict[str, object]:
    out = {}
    for o in overrides:
        key, sep, value = str(o).partition("=")
        if not sep:
            continue
        key = key.lstrip("+~")  # Hydra's add / force-add / delete prefixes name the same key
        if key.split(".")[0].split("@")[0] in _BOOKKEEPING:
            continue
        out[key] = canonical_value(value)
    return out


def _override_set(overrides) -> set[tuple[str, object]]:
    return set(_override_items(overrides).items())


@dataclass(frozen=True)
class ResultRef:
    """One results JSON: its identity and metric rows."""

    source: str
    experiment: str
    run_name: str
    method: str
    model: str
    concepts: str
    benchmark: str
    created: str
    git_hash: str
    overrides: tuple
    config: dict
    rows: pd.DataFrame
    stand_ins: bool = False  # scored by tiny-scale stand-in evaluators

    @property
    def run_id(self) -> str:
        return f"{self.experiment}/{self.run_name or 'default'}"

    def param(self, key: str):
        """The run's value of a config key: its override if it set one, else its resolved config; None if absent."""
        items = _override_items(self.overrides)
        if key in items:
            return items[key]
        return canonical_value(self.config[key]) if key in self.config else None


def split_results(df: pd.DataFrame) -> list[ResultRef]:
    refs = []
    if df is None or df.empty:
        return refs
    for source, rows in df.groupby("source", sort=True):
        first = rows.iloc[0]
        refs.append(ResultRef(
            source=str(source), experiment=first["experiment"], run_name=first["run_name"], method=first["method"],
            model=first["model"], concepts=first["concepts"], benchmark=first["benchmark"], created=first["created"],
            git_hash=first["git_hash"], overrides=tuple(first["overrides"]), config=first["config"] or {}, rows=rows,
            stand_ins=bool(first.get("stand_ins", False)),
        ))
    return refs


def _equal(actual, expected) -> bool:
    want = expected if isinstance(expected, list) else [expected]
    a = canonical_value(actual) if actual is not None else None
    for w in want:
        w = canonical_value(w)
        if isinstance(a, float) and isinstance(w, float):
            if math.isclose(a, w, rel_tol=1e-9, abs_tol=1e-12):
                return True
        elif a == w:
            return True
    return False


def matches(ref: ResultRef, match: dict) -> bool:
    if ref.stand_ins and "model" not in match:
        # Stand-in numbers are meaningless: only a clause that asks for their model (model: tiny) may show them.
        return False
    for key in ("experiment", "run_name", "method", "model", "concepts"):
        if key in match and not _equal(getattr(ref, key), match[key]):
            return False
    if "overrides" in match and _override_set(ref.overrides) != _override_set(match["overrides"]):
        return False
    if "overrides_include" in match and not _override_set(match["overrides_include"]) <= _override_set(ref.overrides):
        return False
    if "only_override_keys" in match and not set(_override_items(ref.overrides)) <= set(match["only_override_keys"]):
        return False
    for key, expected in (match.get("config") or {}).items():
        value = ref.param(key)
        if value is None or not _equal(value, expected):
            return False
    return True


def _show(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def describe_match(match: dict) -> str:
    """A match clause as the user wrote it in YAML flow style, for warnings."""
    return _show(dict(match))


def select(refs: list[ResultRef], match: dict, benchmark: str) -> tuple[ResultRef | None, list[ResultRef]]:
    """The most recent matching result for a benchmark, and all matching ones (to report ambiguity)."""
    found = [r for r in refs if r.benchmark == benchmark and matches(r, match)]
    if not found:
        return None, []
    found.sort(key=lambda r: (r.created, r.source))
    return found[-1], found
