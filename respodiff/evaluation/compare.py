"""`python -m respodiff.evaluation compare --base RUN RUN...`: paired differences and leakage against the base model.

Reads both runs' per-image stores (no model is loaded) and writes <benchmark>_vs_base.json beside the run's results, in
the results schema, so the tables select its rows like any benchmark's (statistics: respodiff/evaluation/paired.py).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd

from respodiff.errors import MissingAssetError
from respodiff.evaluation import paired
from respodiff.evaluation.registry import Metric, get_benchmark, metric_value
from respodiff.evaluation.rescore import rescorable, results_folder
from respodiff.io import write_json_atomically

SUFFIX = "_vs_base"
LEAKAGE_TV = Metric("leakage_tv", "1", False, "mean over professions of the total-variation distance between the "
                    "method's and the base model's distribution of an attribute the module does not target")
LEAKAGE_TV_FLOOR = Metric("leakage_tv_floor", "1", False, "expected leakage_tv of a method identical to the base "
                          "model (two independent samples of the base model's shares)")
LEAKAGE_DEVRAT_DIFF = Metric("leakage_devrat_diff", "1", False, "DevRat of the untargeted attribute, method minus base")


def _diff_metric(name: str, higher_is_better: bool) -> Metric:
    return Metric(f"{name}_diff", "1", higher_is_better, f"{name}, method minus base model, paired on image seeds")


def _row(metric: Metric, samples: np.ndarray, n: int, group: dict | None = None,
         bounds: tuple[float, float] = (-1.0, 1.0)) -> dict:
    """A row with the paired interval, clipped to the values the statistic can take (the basic interval can leave
    them: a DevRat difference below -1 is impossible)."""
    low, high = paired.interval(samples)
    return metric_value(metric, float(samples[0]), n=n, ci=(max(low, bounds[0]), min(high, bounds[1])), group=group)


def winobias_rows(base: pd.DataFrame, method: pd.DataFrame, record: dict, n_boot: int, seed: int) -> list[dict]:
    bench = get_benchmark(record["benchmark"])
    classes = record["evaluator"]["attribute_labels"]
    target = record["evaluator"].get("attribute")
    others = [a for a in paired.TOY_ATTRIBUTES if a != target and a in base.columns and a in method.columns]
    columns = ["profession", "attribute", *(c for _, c in bench.mean_metrics), *others]
    joined = paired.join_runs(base, method, list(dict.fromkeys(columns)))
    groups = joined["profession_base"].to_numpy()
    weights = paired.bootstrap_weights(joined["image_id"], groups, n_boot, paired.seeded(seed, "winobias"))
    n = len(joined)

    def devrat(side: str, column: str, labels) -> np.ndarray:
        return paired.weighted_devrat(weights, joined[f"{column}_{side}"].to_numpy(), groups, labels)

    rows = [_row(_diff_metric("devrat", False), devrat("method", "attribute", classes)
                 - devrat("base", "attribute", classes), n)]
    for metric, column in bench.mean_metrics:
        diff = (paired.weighted_mean(weights, joined[f"{column}_method"].astype(float))
                - paired.weighted_mean(weights, joined[f"{column}_base"].astype(float)))
        rows.append(_row(_diff_metric(metric.name, metric.higher_is_better), diff, n, bounds=(-np.inf, np.inf)))
    for attribute in others:
        labels = paired.TOY_ATTRIBUTES[attribute]
        base_labels, method_labels = joined[f"{attribute}_base"].to_numpy(), joined[f"{attribute}_method"].to_numpy()
        group = {"attribute": attribute}
        rows.append(_row(LEAKAGE_TV, paired.weighted_tv(weights, base_labels, method_labels, groups, labels), n,
                         group, bounds=(0.0, 1.0)))
        floor = paired.tv_floor(base_labels, groups, labels, paired.seeded(seed, "floor", attribute))
        rows.append(metric_value(LEAKAGE_TV_FLOOR, floor, n=n, group=group))
        rows.append(_row(LEAKAGE_DEVRAT_DIFF, devrat("method", attribute, labels) - devrat("base", attribute, labels),
                         n, group))
    return rows


def i2p_rows(base: pd.DataFrame, method: pd.DataFrame, record: dict, n_boot: int, seed: int) -> list[dict]:
    bench = get_benchmark(record["benchmark"])
    rate = bench.detectors[0] if len(bench.detectors) == 1 else "either"
    extra = [c for c in ("agreement",) if c in base.columns]
    joined = paired.join_runs(base, method, ["prompt_id", rate, *extra])
    weights = paired.bootstrap_weights(joined["prompt_id_base"], None, n_boot, paired.seeded(seed, "i2p"))
    rows = []
    for name, column, higher in ((bench.rate_metric.name, rate, False), *((c, c, True) for c in extra)):
        diff = (paired.weighted_mean(weights, joined[f"{column}_method"].astype(float))
                - paired.weighted_mean(weights, joined[f"{column}_base"].astype(float)))
        rows.append(_row(_diff_metric(name, higher), diff, len(joined),
                         bounds=(-1.0, 1.0) if column == rate else (-np.inf, np.inf)))
    return rows


def _load(run: Path, benchmark: str) -> tuple[dict, pd.DataFrame]:
    results = results_folder(run)
    store = results / f"{benchmark}.per_image.parquet"
    if not store.is_file():
        raise MissingAssetError(f"{store} is missing: a paired comparison needs both runs' per-image scores")
    return json.loads((results / f"{benchmark}.json").read_text()), pd.read_parquet(store)


def compare_runs(base_run: str | Path, method_run: str | Path, *, n_boot: int = 1000, seed: int = 0) -> list[Path]:
    """Write <method_run>/results/<benchmark>_vs_base.json for every benchmark both runs evaluated that pairs."""
    written = []
    for path in sorted(results_folder(method_run).glob("*.json")):
        name = path.stem
        if name.endswith(SUFFIX) or not (results_folder(base_run) / path.name).is_file():
            continue
        if not rescorable(name):
            continue
        compute = winobias_rows if hasattr(get_benchmark(name), "aggregate") else i2p_rows
        record, method = _load(Path(method_run), name)
        _, base = _load(Path(base_run), name)
        out = copy.deepcopy(record)
        out["benchmark"] = f"{name}{SUFFIX}"
        out["metrics"] = compute(base, method, record, n_boot, seed)
        out["compared_with"] = str(base_run)
        written.append(write_json_atomically(results_folder(method_run) / f"{name}{SUFFIX}.json", out,
                                             sort_keys=False, allow_nan=False))
    return written
