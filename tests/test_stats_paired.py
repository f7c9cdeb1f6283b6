"""Paired comparisons with the base model and leakage, from per-image stores (no model, no images)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from respodiff.evaluation import paired
from respodiff.evaluation.compare import compare_runs, i2p_rows, winobias_rows

KINDS = ("chef", "doctor", "farmer", "nurse")
RECORD = {"benchmark": "winobias_toy", "evaluator": {"attribute": "gender", "attribute_labels": ["man", "woman"]}}


def _winobias(gender, race, kind_recognised=True, per_kind: int = 40) -> pd.DataFrame:
    n = per_kind * len(KINDS)
    frame = pd.DataFrame({"image_id": [f"w/{i}" for i in range(n)], "prompt_id": [f"p{i // 8}" for i in range(n)],
                          "profession": np.repeat(KINDS, per_kind)})
    frame["gender"] = gender(np.arange(n))
    frame["attribute"] = frame["gender"]
    frame["race"] = race(np.arange(n))
    frame["kind_recognised"] = kind_recognised
    frame["agreement"] = 100.0 * frame["kind_recognised"]
    return frame


def _rows(rows, name, **group):
    return next(r for r in rows if r["name"] == name and r["group"] == (group or None))


RACES = np.array(["pale", "tan", "dark"])


def test_paired_devrat_difference_and_leakage():
    base = _winobias(lambda i: np.where(i % 10 == 0, "woman", "man"), lambda i: RACES[i % 3])
    fair_same_race = _winobias(lambda i: np.where(i % 2 == 0, "woman", "man"), lambda i: RACES[i % 3])
    fair_paler = _winobias(lambda i: np.where(i % 2 == 0, "woman", "man"), lambda i: np.where(i % 4 == 0, "tan",
                                                                                              "pale"))
    rows = winobias_rows(base, fair_same_race, RECORD, 400, 0)
    diff = _rows(rows, "devrat_diff")
    assert diff["value"] == pytest.approx(-0.8) and diff["ci_high"] < 0  # a real improvement: interval excludes 0
    assert diff["ci_low"] <= diff["value"] <= diff["ci_high"]
    kind = _rows(rows, "kind_recognised_diff")
    assert kind["value"] == 0.0 and kind["ci_low"] == kind["ci_high"] == 0.0
    # Race untouched: no leakage (identical labels image by image); race shifted: leakage well above its floor.
    assert _rows(rows, "leakage_tv", attribute="race")["value"] == 0.0
    leaky = winobias_rows(base, fair_paler, RECORD, 400, 0)
    tv = _rows(leaky, "leakage_tv", attribute="race")
    floor = _rows(leaky, "leakage_tv_floor", attribute="race")["value"]
    assert tv["value"] == pytest.approx(5 / 12, abs=0.01) and tv["ci_low"] > floor  # 1/2 (1/3 + 1/12 + 5/12)
    assert _rows(leaky, "leakage_devrat_diff", attribute="race")["value"] > 0.3


def test_paired_interval_is_narrower_than_comparing_two_intervals():
    """Pairing cancels what both runs share: the same images, one flipped in ten."""
    rng = np.random.default_rng(0)
    score = rng.uniform(0, 100, size=160)
    base = _winobias(lambda i: np.where(i % 2 == 0, "woman", "man"), lambda i: RACES[i % 3])
    method = base.copy()
    base["agreement"], method["agreement"] = score, score + 1.0
    rows = winobias_rows(base, method, RECORD, 400, 0)
    diff = _rows(rows, "agreement_diff")
    assert diff["value"] == pytest.approx(1.0) and diff["ci_high"] - diff["ci_low"] < 1e-9
    weights = paired.bootstrap_weights(base["image_id"], base["profession"], 400, np.random.default_rng(1))
    unpaired = paired.weighted_mean(weights, score)
    assert np.percentile(unpaired, 97.5) - np.percentile(unpaired, 2.5) > 5.0


def test_i2p_rows_resample_prompts_and_refuse_unpaired_runs():
    prompts = np.repeat([f"p{i}" for i in range(20)], 4)
    base = pd.DataFrame({"image_id": [f"i{k}" for k in range(80)], "prompt_id": prompts, "unsafe": True,
                         "agreement": 50.0})
    method = base.assign(unsafe=np.arange(80) % 4 == 0)
    rows = i2p_rows(base, method, {"benchmark": "i2p_toy"}, 400, 0)
    rate = _rows(rows, "unsafe_rate_diff")
    assert rate["value"] == pytest.approx(-0.75) and rate["ci_high"] < 0
    with pytest.raises(ValueError, match="same images"):
        i2p_rows(base, method.iloc[1:], {"benchmark": "i2p_toy"}, 10, 0)


def test_compare_runs_writes_a_result_per_benchmark(tmp_path):
    base = _winobias(lambda i: np.where(i % 10 == 0, "woman", "man"), lambda i: RACES[i % 3])
    method = _winobias(lambda i: np.where(i % 2 == 0, "woman", "man"), lambda i: RACES[i % 3])
    for run, frame in (("base", base), ("method", method)):
        (tmp_path / run / "results").mkdir(parents=True)
        frame.to_parquet(tmp_path / run / "results" / "winobias_toy.per_image.parquet")
        record = {"schema": "respodiff.result/1", **RECORD, "metrics": [], "config": {}}
        (tmp_path / run / "results" / "winobias_toy.json").write_text(json.dumps(record))
    [path] = compare_runs(tmp_path / "base", tmp_path / "method", n_boot=100)
    written = json.loads(path.read_text())
    assert path.name == "winobias_toy_vs_base.json" and written["benchmark"] == "winobias_toy_vs_base"
    assert _rows(written["metrics"], "devrat_diff")["value"] == pytest.approx(-0.8)
