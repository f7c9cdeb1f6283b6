"""`python -m respodiff.evaluation compare --base RUN RUN...`: paired differences and leakage against the base model.

Reads both runs' per-image stores (no model is loaded) and writes <benchmark>_vs_base.json beside the run's results, in
the results schema, so the tables select its rows like any benchmark's (statistics: respodiff/evaluation/paired.py).
Which rows a benchmark gets:
- Winobias(-toy): DevRat and the mean metrics' differences; leakage of every attribute the run does not target (per
  profession); within-prompt diversity's difference;
- I2P(-toy): the flag rate's and agreement's differences, prompts resampled; diversity's difference;
- caption benchmarks whose store keeps the leakage columns (coco_toy; coco30k when asked, leakage.py): the mean
  metrics' differences (agreement, CLIP score) and gender / race leakage on the captions that leave them open,
  grouped by the caption's subject. Such a benchmark without those columns pairs nothing and is skipped.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd

from respodiff.errors import MissingAssetError
from respodiff.evaluation import paired
from respodiff.evaluation.diversity import EMBEDDING_COLUMN, per_prompt_diversity
from respodiff.evaluation.leakage import LEAKAGE_COLUMNS, SUBJECT, attribute_classes, target_attribute
from respodiff.evaluation.registry import Metric, get_benchmark, metric_value
from respodiff.evaluation.rescore import results_folder
from respodiff.io import write_json_atomically

SUFFIX = "_vs_base"
LEAKAGE_TV = Metric("leakage_tv", "1", False, "mean over groups (professions; on caption benchmarks the caption's "
                    "subject) of the total-variation distance between the method's and the base model's distribution "
                    "of an attribute the module does not target")
LEAKAGE_TV_FLOOR = Metric("leakage_tv_floor", "1", False, "expected leakage_tv of a method identical to the base "
                          "model (two independent samples of the base model's shares)")
LEAKAGE_DEVRAT_DIFF = Metric("leakage_devrat_diff", "1", False, "DevRat of the untargeted attribute, method minus base")
LEAKAGE_METRICS = (LEAKAGE_TV, LEAKAGE_TV_FLOOR, LEAKAGE_DEVRAT_DIFF)


def _diff_metric(name: str, higher_is_better: bool) -> Metric:
    return Metric(f"{name}_diff", "1", higher_is_better, f"{name}, method minus base model, paired on image seeds")


def declared_metric(benchmark: str, name: str) -> Metric | None:
    """The declaration of a row `name` that `compare` writes into <base>_vs_base results (for the reporting
    catalogue): a leakage metric, or `<metric>_diff` of one of the base benchmark's metrics."""
    if not benchmark.endswith(SUFFIX):
        return None
    for metric in LEAKAGE_METRICS:
        if metric.name == name:
            return metric
    base = get_benchmark(benchmark[: -len(SUFFIX)])
    for metric in base.metrics:
        if f"{metric.name}_diff" == name:
            return _diff_metric(metric.name, metric.higher_is_better)
    return None


def _row(metric: Metric, samples: np.ndarray, n: int, group: dict | None = None,
         bounds: tuple[float, float] = (-1.0, 1.0)) -> dict:
    """A row with the paired interval, clipped to the values the statistic can take (the basic interval can leave
    them: a DevRat difference below -1 is impossible)."""
    low, high = paired.interval(samples)
    return metric_value(metric, float(samples[0]), n=n, ci=(max(low, bounds[0]), min(high, bounds[1])), group=group)


def _mean_diff_row(metric: Metric, weights: np.ndarray, joined: pd.DataFrame, column: str,
                   bounds: tuple[float, float] = (-np.inf, np.inf)) -> dict:
    diff = (paired.weighted_mean(weights, joined[f"{column}_method"].astype(float))
            - paired.weighted_mean(weights, joined[f"{column}_base"].astype(float)))
    return _row(_diff_metric(metric.name, metric.higher_is_better), diff, len(joined), bounds=bounds)


def diversity_rows(base: pd.DataFrame, method: pd.DataFrame, n_boot: int, seed: int,
                   strata: str | None = None) -> list[dict]:
    """Within-prompt diversity, method minus base: prompts resampled (within `strata`, e.g. professions); none
    unless both stores keep embeddings."""
    if EMBEDDING_COLUMN not in base.columns or EMBEDDING_COLUMN not in method.columns:
        return []
    per_prompt = pd.concat({"base": per_prompt_diversity(base), "method": per_prompt_diversity(method)},
                           axis=1, join="inner")
    if per_prompt.empty:
        return []
    groups = None
    if strata is not None:
        groups = base.drop_duplicates("prompt_id").set_index("prompt_id")[strata].reindex(per_prompt.index).to_numpy()
    weights = paired.bootstrap_weights(per_prompt.index.to_numpy(), groups, n_boot, paired.seeded(seed, "diversity"))
    diff = paired.weighted_mean(weights, (per_prompt["method"] - per_prompt["base"]).to_numpy())
    # Cosine distances lie in [0, 2], so their difference in [-2, 2].
    return [_row(_diff_metric("diversity", True), diff, len(per_prompt), bounds=(-2.0, 2.0))]


def _leakage_rows(joined: pd.DataFrame, attribute: str, labels, groups: np.ndarray, weights: np.ndarray,
                  seed: int) -> list[dict]:
    base_labels, method_labels = joined[f"{attribute}_base"].to_numpy(), joined[f"{attribute}_method"].to_numpy()
    group = {"attribute": attribute}
    floor = paired.tv_floor(base_labels, groups, labels, paired.seeded(seed, "floor", attribute))
    return [_row(LEAKAGE_TV, paired.weighted_tv(weights, base_labels, method_labels, groups, labels), len(joined),
                 group, bounds=(0.0, 1.0)),
            metric_value(LEAKAGE_TV_FLOOR, floor, n=len(joined), group=group)]


def winobias_rows(base: pd.DataFrame, method: pd.DataFrame, record: dict, n_boot: int, seed: int) -> list[dict]:
    bench = get_benchmark(record["benchmark"])
    classes = record["evaluator"]["attribute_labels"]
    target = record["evaluator"].get("attribute")
    known = attribute_classes(bench)
    others = [a for a in known if a != target and a in base.columns and a in method.columns]
    columns = ["profession", "attribute", *(c for _, c in bench.mean_metrics), *others]
    joined = paired.join_runs(base, method, list(dict.fromkeys(columns)))
    groups = joined["profession_base"].to_numpy()
    weights = paired.bootstrap_weights(joined["image_id"], groups, n_boot, paired.seeded(seed, "winobias"))
    n = len(joined)

    def devrat(side: str, column: str, labels) -> np.ndarray:
        return paired.weighted_devrat(weights, joined[f"{column}_{side}"].to_numpy(), groups, labels)

    rows = [_row(_diff_metric("devrat", False), devrat("method", "attribute", classes)
                 - devrat("base", "attribute", classes), n)]
    rows += [_mean_diff_row(metric, weights, joined, column) for metric, column in bench.mean_metrics]
    for attribute in others:
        labels = known[attribute]
        rows += _leakage_rows(joined, attribute, labels, groups, weights, seed)
        rows.append(_row(LEAKAGE_DEVRAT_DIFF, devrat("method", attribute, labels) - devrat("base", attribute, labels),
                         n, {"attribute": attribute}))
    return rows + diversity_rows(base, method, n_boot, seed, strata="profession")


def i2p_rows(base: pd.DataFrame, method: pd.DataFrame, record: dict, n_boot: int, seed: int) -> list[dict]:
    bench = get_benchmark(record["benchmark"])
    rate = bench.detectors[0] if len(bench.detectors) == 1 else "either"
    extra = [c for c in ("agreement",) if c in base.columns]
    joined = paired.join_runs(base, method, ["prompt_id", rate, *extra])
    weights = paired.bootstrap_weights(joined["prompt_id_base"], None, n_boot, paired.seeded(seed, "i2p"))
    rows = [_mean_diff_row(bench.rate_metric, weights, joined, rate, bounds=(-1.0, 1.0))]
    rows += [_mean_diff_row(Metric(c, "1", True), weights, joined, c) for c in extra]
    return rows + diversity_rows(base, method, n_boot, seed)


def caption_rows(base: pd.DataFrame, method: pd.DataFrame, record: dict, n_boot: int, seed: int) -> list[dict]:
    """COCO-style benchmarks (one image per caption): mean metrics' differences, and leakage of every attribute the
    run does not target, on the captions that neither name it nor lack a person, within each caption subject."""
    bench = get_benchmark(record["benchmark"])
    classes = attribute_classes(bench)
    target = target_attribute(record.get("config"), classes)
    means = [m for m in bench.metrics if m.name in base.columns and m.name in method.columns]
    attributes = [a for a in classes if a != target]
    columns = ["prompt_id", *(m.name for m in means), *attributes, *(f"names_{a}" for a in attributes), SUBJECT]
    joined = paired.join_runs(base, method, columns)
    weights = paired.bootstrap_weights(joined["prompt_id_base"], None, n_boot, paired.seeded(seed, "captions"))
    rows = [_mean_diff_row(metric, weights, joined, metric.name) for metric in means]
    for attribute in attributes:
        open_captions = joined[~joined[f"names_{attribute}_base"].astype(bool).to_numpy()
                               & (joined[f"{SUBJECT}_base"] != "").to_numpy()]
        if open_captions.empty:
            continue
        groups = open_captions[f"{SUBJECT}_base"].to_numpy()
        resampled = paired.bootstrap_weights(open_captions["prompt_id_base"], groups, n_boot,
                                             paired.seeded(seed, "captions", attribute))
        rows += _leakage_rows(open_captions, attribute, classes[attribute], groups, resampled, seed)
    return rows


def _pairing(benchmark, store: pd.DataFrame | None):
    """The row builder for a benchmark, or None when it pairs nothing (a caption store without leakage columns)."""
    if hasattr(benchmark, "aggregate"):
        return winobias_rows
    if hasattr(benchmark, "rescore"):
        return i2p_rows
    if store is not None and set(LEAKAGE_COLUMNS) <= set(store.columns):
        return caption_rows
    return None


def _store(run: Path, benchmark: str) -> pd.DataFrame | None:
    path = results_folder(run) / f"{benchmark}.per_image.parquet"
    return pd.read_parquet(path) if path.is_file() else None


def compare_runs(base_run: str | Path, method_run: str | Path, *, n_boot: int = 1000, seed: int = 0) -> list[Path]:
    """Write <method_run>/results/<benchmark>_vs_base.json for every benchmark both runs evaluated that pairs."""
    written = []
    for path in sorted(results_folder(method_run).glob("*.json")):
        name = path.stem
        if name.endswith(SUFFIX) or not (results_folder(base_run) / path.name).is_file():
            continue
        method = _store(Path(method_run), name)
        compute = _pairing(get_benchmark(name), method)
        if compute is None:
            continue
        base = _store(Path(base_run), name)
        for run, store in ((method_run, method), (base_run, base)):
            if store is None:
                raise MissingAssetError(f"{results_folder(run) / name}.per_image.parquet is missing: a paired "
                                        "comparison needs both runs' per-image scores")
        if compute is caption_rows and not set(LEAKAGE_COLUMNS) <= set(base.columns):
            raise MissingAssetError(f"{results_folder(base_run) / name}.per_image.parquet has no leakage columns "
                                    f"({', '.join(LEAKAGE_COLUMNS)}), the method's has: evaluate the base run again")
        record = json.loads(path.read_text())
        out = copy.deepcopy(record)
        out["benchmark"] = f"{name}{SUFFIX}"
        out["metrics"] = compute(base, method, record, n_boot, seed)
        out["compared_with"] = str(base_run)
        written.append(write_json_atomically(results_folder(method_run) / f"{name}{SUFFIX}.json", out,
                                             sort_keys=False, allow_nan=False))
    return written
