"""Reproduction specs (reproductions/*.yaml): which runs fill which cells of a paper table, and the paper's numbers.

A spec is validated completely when loaded (unknown keys, unknown metrics, paper numbers for undeclared columns
all raise SpecError naming the file), because a typo would otherwise surface only as a silent column of dashes.

Format (see reproductions/README.md for the full description):

    title: Gender debiasing on Winobias (SD v1.4)
    source: RespoDiff Table 1 (PROTOCOL.md section 5)
    columns:
      - {id: devrat, benchmark: winobias, metric: devrat}
      - {id: ceo, benchmark: winobias, metric: devrat, group: {profession: ceo}, label: CEO}
    rows:
      - label: RespoDiff
        match: {experiment: gender_sd14, overrides: []}
        paper: {devrat: 0.14}
      - {label: SDisc, paper_only: true, paper: {devrat: 0.17}}
    sweep:   # optional: one row per value of a config key found among matching runs (multirun sweeps)
      match: {experiment: gender_sd14}
      param: method.lambda_sem
      values: {0: {paper: {devrat: 0.12}}, 1: {}}
    plots:
      - {kind: tradeoff, x: devrat, y: winoalign}

A paired-difference column (`<metric>_diff` of a `<benchmark>_vs_base` result) may carry `worse_note: "text"`: the
table then adds a note naming the rows whose difference is marked (95% interval excludes 0) on the worse side, e.g.
the methods whose within-prompt diversity falls below the base model's. The row those differences are taken against
says `reference: true`: its paired cells are blank by construction (a note says so), not missing results.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from respodiff.errors import ConfigError
from respodiff.reporting.catalog import MetricInfo, SpecError, metric_info

MATCH_KEYS = {
    "experiment", "run_name", "method", "model", "concepts",  # equal to the result's field (or one of a list)
    "overrides",  # the run's overrides, as a set, equal these (ignoring bookkeeping overrides such as experiment=)
    "overrides_include",  # the run's overrides include these
    "only_override_keys",  # the run overrides no key outside these
    "config",  # {dotted.key: value}: the run's value (its override, else its resolved config) equals value
}
_TOP_KEYS = {"title", "source", "caption", "notes", "row_header", "transpose", "columns", "rows", "sweep", "plots"}
_COLUMN_KEYS = {"id", "benchmark", "metric", "group", "label", "digits", "match", "worse_note"}
PAIRED_SUFFIX = "_vs_base"  # results written by `python -m respodiff.evaluation compare`
_PAIRED_LABELS = {"leakage_tv": "Leakage (TV)", "leakage_tv_floor": "Leakage floor (TV)",
                  "leakage_devrat_diff": "ΔDevRat (untargeted attribute)"}
_ROW_KEYS = {"label", "match", "paper", "paper_only", "note", "seeds", "reference"}
_SWEEP_KEYS = {"match", "param", "label", "values", "digits"}
_SWEEP_VALUE_KEYS = {"paper", "note", "label"}
_PLOT_KEYS = {
    "tradeoff": {"kind", "name", "title", "x", "y"},
    "group_bars": {"kind", "name", "title", "benchmark", "metric", "group_key", "rows"},
}
_ID = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class ColumnSpec:
    id: str
    benchmark: str
    metric: str
    group: dict | None
    label: str
    digits: int
    higher_is_better: bool
    match: dict = field(default_factory=dict)
    worse_note: str = ""  # a paired-difference column: note the rows marked on the worse side


@dataclass(frozen=True)
class RowSpec:
    label: str
    match: dict
    paper: dict  # column id -> paper number
    paper_only: bool = False
    note: str = ""
    sweep_value: float | None = None
    seeds: tuple[int, ...] = ()  # training seeds: the cell is their mean +- sd (respodiff/reporting/seeds.py)
    reference: bool = False  # the base of the paired (<benchmark>_vs_base) columns: those cells stay blank


@dataclass(frozen=True)
class SweepSpec:
    match: dict
    param: str
    label: str
    values: dict  # float value -> {"paper": {...}, "note": str, "label": str}
    digits: int | None = None


@dataclass(frozen=True)
class PlotSpec:
    kind: str
    name: str
    title: str
    options: dict


@dataclass(frozen=True)
class TableSpec:
    name: str
    title: str
    source: str
    caption: str
    notes: tuple[str, ...]
    row_header: str
    transpose: bool
    columns: tuple[ColumnSpec, ...]
    rows: tuple[RowSpec, ...]
    sweep: SweepSpec | None
    plots: tuple[PlotSpec, ...]
    path: str = ""

    def column(self, col_id: str) -> ColumnSpec:
        for c in self.columns:
            if c.id == col_id:
                return c
        raise KeyError(col_id)


def _err(where: str, msg: str) -> SpecError:
    return SpecError(f"{where}: {msg}")


def _mapping(obj, where: str, allowed: set[str], required: tuple[str, ...] = ()) -> dict:
    if not isinstance(obj, dict):
        raise _err(where, f"expected a mapping, got {type(obj).__name__} {obj!r}")
    unknown = sorted(set(map(str, obj)) - allowed)
    if unknown:
        raise _err(where, f"unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    missing = [k for k in required if k not in obj]
    if missing:
        raise _err(where, f"missing required key(s) {missing}")
    return obj


def _number(value, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _err(where, f"paper numbers must be finite numbers or null, got {value!r}")
    return float(value)


def _scalar_or_list(value, where: str):
    values = value if isinstance(value, list) else [value]
    for v in values:
        if isinstance(v, (dict, list)):
            raise _err(where, f"expected a scalar or a list of scalars, got {value!r}")
    return value


def validate_match(match, where: str) -> dict:
    match = dict(_mapping(match if match is not None else {}, where, MATCH_KEYS))
    for key in ("experiment", "run_name", "method", "model", "concepts"):
        if key in match:
            _scalar_or_list(match[key], f"{where}.{key}")
    for key in ("overrides", "overrides_include"):
        if key in match:
            ovs = match[key]
            if not isinstance(ovs, list) or not all(isinstance(o, str) and "=" in o for o in ovs):
                raise _err(f"{where}.{key}", f"expected a list of 'key=value' strings, got {ovs!r}")
    if "only_override_keys" in match:
        keys = match["only_override_keys"]
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise _err(f"{where}.only_override_keys", f"expected a list of keys, got {keys!r}")
    if "config" in match:
        cfg = match["config"]
        if not isinstance(cfg, dict) or not cfg:
            raise _err(f"{where}.config", f"expected a non-empty mapping of dotted keys to values, got {cfg!r}")
        match["config"] = {str(k): _scalar_or_list(v, f"{where}.config.{k}") for k, v in cfg.items()}
    return match


def _paper(paper, where: str, column_ids: set[str]) -> dict:
    if paper is None:
        return {}
    if not isinstance(paper, dict):
        raise _err(where, f"expected a mapping column id -> number, got {paper!r}")
    unknown = sorted(set(map(str, paper)) - column_ids)
    if unknown:
        raise _err(where, f"paper numbers for undeclared column(s) {unknown}; columns: {sorted(column_ids)}")
    return {str(k): v for k, v in ((k, _number(v, f"{where}.{k}")) for k, v in paper.items()) if v is not None}


def _column(obj, where: str) -> ColumnSpec:
    obj = _mapping(obj, where, _COLUMN_KEYS, ("id", "benchmark", "metric"))
    col_id = str(obj["id"])
    if not _ID.fullmatch(col_id):
        raise _err(where, f"column id {col_id!r} must be letters, digits, '_' or '-'")
    group = obj.get("group")
    if group is not None and (not isinstance(group, dict) or not group):
        raise _err(where, f"group must be a non-empty mapping such as {{profession: ceo}} or absent, got {group!r}")
    digits = obj.get("digits", 2)
    if not isinstance(digits, int) or isinstance(digits, bool) or not 0 <= digits <= 6:
        raise _err(where, f"digits must be an integer 0..6, got {digits!r}")
    try:
        info: MetricInfo = column_metric_info(str(obj["benchmark"]), str(obj["metric"]))
    except SpecError as exc:
        raise _err(where, str(exc)) from None
    label = str(obj.get("label") or info.label)
    worse_note = obj.get("worse_note", "")
    if worse_note and not (info.benchmark.endswith(PAIRED_SUFFIX) and info.name.endswith("_diff")):
        raise _err(where, f"worse_note needs a paired-difference column (<metric>_diff of a <benchmark>{PAIRED_SUFFIX} "
                          f"result), got {info.benchmark}/{info.name}")
    return ColumnSpec(col_id, info.benchmark, info.name, dict(group) if group else None, label, digits,
                      info.higher_is_better, validate_match(obj.get("match"), f"{where}.match"), str(worse_note))


def column_metric_info(benchmark: str, name: str) -> MetricInfo:
    """The catalogue's entry, else, for a paired result (<benchmark>_vs_base), the declaration `compare` writes its
    rows with: the difference of any of the benchmark's metrics, or a leakage metric."""
    try:
        return metric_info(benchmark, name)
    except SpecError:
        if not benchmark.endswith(PAIRED_SUFFIX):
            raise
        try:
            from respodiff.evaluation.compare import declared_metric

            metric = declared_metric(benchmark, name)
        except ConfigError:  # the base benchmark is unknown: the catalogue's error says what is known
            metric = None
        if metric is None:
            raise
    label = _PAIRED_LABELS.get(name)
    if label is None:
        base = name[: -len("_diff")]
        try:
            label = metric_info(benchmark[: -len(PAIRED_SUFFIX)], base).label
        except SpecError:
            label = base
        # The registry labels a metric by its name ("diversity"); a header reads better capitalised.
        label = "Δ" + (label.replace("_", " ").capitalize() if label == base else label)
    return MetricInfo(benchmark, name, metric.higher_is_better, label)


def canonical_value(value):
    """Numbers compare as numbers ("0.50" == 0.5), everything else as its string."""
    if isinstance(value, bool):
        return str(value).lower()
    try:
        f = float(value)
        return f if math.isfinite(f) else str(value)
    except (TypeError, ValueError):
        return str(value)


def _sweep(obj, where: str, column_ids: set[str]) -> SweepSpec:
    obj = _mapping(obj, where, _SWEEP_KEYS, ("match", "param"))
    values = obj.get("values") or {}
    if not isinstance(values, dict):
        raise _err(f"{where}.values", f"expected a mapping value -> {{paper: ...}}, got {values!r}")
    parsed = {}
    for raw, info in values.items():
        key = canonical_value(raw)
        if not isinstance(key, float):
            raise _err(f"{where}.values", f"sweep values must be numbers, got {raw!r}")
        info = _mapping(info or {}, f"{where}.values.{raw}", _SWEEP_VALUE_KEYS)
        parsed[key] = {"paper": _paper(info.get("paper"), f"{where}.values.{raw}.paper", column_ids),
                       "note": str(info.get("note", "")), "label": info.get("label")}
    return SweepSpec(validate_match(obj["match"], f"{where}.match"), str(obj["param"]),
                     str(obj.get("label", "λ = {value}")), parsed, obj.get("digits"))


def _plot(obj, where: str, spec_name: str, column_ids: set[str], index: int) -> PlotSpec:
    if not isinstance(obj, dict) or obj.get("kind") not in _PLOT_KEYS:
        raise _err(where, f"plot needs kind one of {sorted(_PLOT_KEYS)}, got {obj!r}")
    kind = obj["kind"]
    required = ("x", "y") if kind == "tradeoff" else ("benchmark", "metric", "group_key")
    obj = _mapping(obj, where, _PLOT_KEYS[kind], required)
    if kind == "tradeoff":
        for axis in ("x", "y"):
            if obj[axis] not in column_ids:
                raise _err(where, f"{axis}={obj[axis]!r} is not a column id; columns: {sorted(column_ids)}")
    else:
        try:
            metric_info(str(obj["benchmark"]), str(obj["metric"]))
        except SpecError as exc:
            raise _err(where, str(exc)) from None
    name = str(obj.get("name") or (f"{spec_name}_{kind}" if index == 0 else f"{spec_name}_{kind}_{index}"))
    options = {k: v for k, v in obj.items() if k not in ("kind", "name", "title")}
    return PlotSpec(kind, name, str(obj.get("title", "")), options)


def _seeds(value, where: str) -> tuple[int, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(v, int) for v in value):
        raise _err(where, f"seeds must be a list of at least two integer training seeds, got {value!r}")
    return tuple(value)


def _seeded_match(match: dict, seeds: tuple[int, ...]) -> dict:
    """A seeds row matches the runs of any of its training seeds (train.seed, and sweep=seeds, allowed as
    overrides)."""
    if not seeds:
        return match
    out = {**match, "config": {**match.get("config", {}), "train.seed": list(seeds)}}
    if "only_override_keys" in match:
        out["only_override_keys"] = list(dict.fromkeys([*match["only_override_keys"], "train.seed", "sweep"]))
    return out


def parse_spec(data, name: str, where: str = "") -> TableSpec:
    """Validate a spec's parsed YAML; `name` is the output file stem (the spec file's stem)."""
    where = where or name
    data = _mapping(data, where, _TOP_KEYS, ("title", "columns"))
    raw_cols = data["columns"]
    if not isinstance(raw_cols, list) or not raw_cols:
        raise _err(where, "columns must be a non-empty list")
    columns = tuple(_column(c, f"{where}.columns[{i}]") for i, c in enumerate(raw_cols))
    column_ids = [c.id for c in columns]
    if len(set(column_ids)) != len(column_ids):
        raise _err(where, f"duplicate column ids in {column_ids}")
    ids = set(column_ids)
    raw_rows = data.get("rows") or []
    if not isinstance(raw_rows, list):
        raise _err(where, "rows must be a list")
    rows = []
    for i, r in enumerate(raw_rows):
        w = f"{where}.rows[{i}]"
        r = _mapping(r, w, _ROW_KEYS, ("label",))
        paper_only = bool(r.get("paper_only", False))
        if not paper_only and "match" not in r:
            raise _err(w, "a row needs `match` (how to find its run) unless it is `paper_only: true`")
        if paper_only and "match" in r:
            raise _err(w, "a `paper_only` row cannot also have `match`")
        for key in r.get("match") or {}:
            for col in columns:
                if key in col.match:
                    raise _err(w, f"match key {key!r} is also set by column {col.id!r}")
        rows.append(RowSpec(str(r["label"]), _seeded_match(validate_match(r.get("match"), f"{w}.match"),
                                                           _seeds(r.get("seeds"), w)),
                            _paper(r.get("paper"), f"{w}.paper", ids), paper_only, str(r.get("note", "")),
                            seeds=_seeds(r.get("seeds"), w), reference=bool(r.get("reference", False))))
    sweep = _sweep(data["sweep"], f"{where}.sweep", ids) if data.get("sweep") is not None else None
    if not rows and sweep is None:
        raise _err(where, "a spec needs `rows`, a `sweep`, or both")
    labels = [r.label for r in rows]
    if len(set(labels)) != len(labels):
        raise _err(where, f"duplicate row labels in {labels}")
    raw_plots = data.get("plots") or []
    if not isinstance(raw_plots, list):
        raise _err(where, "plots must be a list")
    plots = tuple(_plot(p, f"{where}.plots[{i}]", name, ids, i) for i, p in enumerate(raw_plots))
    notes = data.get("notes") or []
    if isinstance(notes, str):
        notes = [notes]
    return TableSpec(
        name=name, title=str(data["title"]), source=str(data.get("source", "")), caption=str(data.get("caption", "")),
        notes=tuple(str(n) for n in notes), row_header=str(data.get("row_header", "Method")),
        transpose=bool(data.get("transpose", False)), columns=columns, rows=tuple(rows), sweep=sweep,
        plots=plots, path=where,
    )


def load_spec(path: str | os.PathLike) -> TableSpec:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML ({exc})") from exc
    return parse_spec(data, name=path.stem, where=str(path))


def load_specs(specs_dir: str | os.PathLike) -> list[TableSpec]:
    """Every `*.yaml` spec in the folder (files starting with '_' are skipped), sorted by name."""
    specs_dir = Path(specs_dir)
    if not specs_dir.is_dir():
        raise SpecError(f"specs folder {specs_dir} does not exist")
    return [load_spec(p) for p in sorted(specs_dir.glob("*.yaml")) if not p.name.startswith("_")]
