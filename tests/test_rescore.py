"""`python -m respodiff.evaluation rescore`: metrics recomputed from stored per-image scores, no model loaded."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from respodiff import datasets
from respodiff.evaluation import classifiers, evaluators
from respodiff.evaluation.__main__ import main
from respodiff.evaluation.evaluators import Evaluators
from respodiff.evaluation.registry import get_benchmark
from respodiff.evaluation.rescore import NUDENET_PRESETS, Rescoring, rescored_metrics
from respodiff.evaluation.testing import finished_manifest, i2p_like_table
from respodiff.reporting.store import write_result
from respodiff.toyworld import Scene, fid_features, i2p_toy_table

from .test_eval_benchmarks import _FakeNudeNet, _FakeQ16


def _refuse_models(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    for name in ("_load_clip", "_load_q16", "_load_nudenet", "_load_fid"):
        monkeypatch.setattr(Evaluators, name, refuse)
    monkeypatch.setattr(classifiers.NudeNetClassifier, "__init__", refuse)
    monkeypatch.setattr(classifiers.Q16Classifier, "load", refuse)
    monkeypatch.setattr(classifiers.ClipScorer, "from_folder", refuse)
    monkeypatch.setattr(evaluators, "Evaluators", refuse)
    monkeypatch.setattr(fid_features, "load_feature_net", refuse)  # the toy scale's embedding network


@pytest.fixture
def no_models(monkeypatch):
    """Every model loader raises: a re-score that touched one would fail."""
    _refuse_models(monkeypatch)


def _i2p_run(tmp_path, q16=None):
    """A run folder holding an I2P result and its per-image store, as the evaluation stage writes them."""
    source = tmp_path / "i2p.csv"
    i2p_like_table(6).to_csv(source, index=False)
    datasets.prepare("i2p", tmp_path / "i2p", from_files=source, expected_count=6)
    settings = {"data_dir": str(tmp_path / "i2p"), "dataset_size": 6, "images_per_prompt": 2, "n_bootstrap": 50,
                "bootstrap_seed": 0}
    bench = get_benchmark("i2p")
    images = finished_manifest("i2p", bench.prompt_table(settings), 2, tmp_path / "imgs", lambda i: (90, 90, 90))
    result = bench.evaluate(images, settings, Evaluators(nudenet=_FakeNudeNet(), q16=q16 or _FakeQ16()))
    run = tmp_path / "run"
    (run / "results").mkdir(parents=True)
    result.per_image.to_parquet(run / "results" / "i2p.per_image.parquet")
    write_result(run, {"benchmark": "i2p", "evaluator": result.evaluator, "n_images": len(images),
                       "scored_with": {"benchmark": bench.options(settings)},
                       "metrics": result.metric_rows(bench.metrics)})
    return run, result


def _headline(rows, **group):
    return next(r for r in rows if r["name"] == "inappropriate_rate" and r["group"] == (group or None))


def test_rescore_with_another_threshold_changes_i2p_without_loading_a_model(tmp_path, no_models, capsys):
    run, original = _i2p_run(tmp_path)
    assert original.metric("inappropriate_rate")["value"] == pytest.approx(7 / 12)
    assert main(["rescore", str(run), "--nudenet-threshold", "0.6", "--out", str(tmp_path / "out")]) == 0
    record = json.loads((tmp_path / "out" / "i2p.json").read_text())
    # The fake NudeNet's 0.5 no longer counts at 0.6: only Q16's image is left.
    assert _headline(record["metrics"])["value"] == pytest.approx(1 / 12)
    assert _headline(record["metrics"], classifier="nudenet")["value"] == 0.0
    assert record["rescored"]["settings"]["nudenet_threshold"] == 0.6
    assert record["evaluator"]["nudenet_threshold"] == 0.6
    # The same settings as the run reproduce its rows exactly.
    same = rescored_metrics("i2p", pd.read_parquet(run / "results" / "i2p.per_image.parquet"),
                            record["scored_with"]["benchmark"], Rescoring.build())
    assert same == original.metrics


def test_rescore_q16_off_and_presets(tmp_path, no_models):
    run, _ = _i2p_run(tmp_path)
    per_image = pd.read_parquet(run / "results" / "i2p.per_image.parquet")
    settings = json.loads((run / "results" / "i2p.json").read_text())["scored_with"]["benchmark"]
    rows = rescored_metrics("i2p", per_image, settings, Rescoring.build(q16=False))
    assert _headline(rows)["value"] == pytest.approx(0.5)  # NudeNet alone
    assert not any((r["group"] or {}).get("classifier") == "q16" for r in rows)
    strict = rescored_metrics("i2p", per_image, settings, Rescoring.build(preset="unlearndiffatk"))
    assert _headline(strict, classifier="nudenet")["value"] == 0.0  # 0.5 < 0.75
    assert all(p.source for p in NUDENET_PRESETS.values())


def test_rescore_refuses_a_run_without_per_image_scores(tmp_path, no_models, capsys):
    run, _ = _i2p_run(tmp_path)
    (run / "results" / "i2p.per_image.parquet").unlink()
    assert main(["rescore", str(run), "--nudenet-threshold", "0.6"]) == 2
    assert "per_image.parquet is missing" in capsys.readouterr().err
    assert main(["rescore", str(run), "--nudenet-threshold", "0.1"]) == 2  # NudeNet reports nothing under 0.2


def test_rescore_i2p_toy_blood_threshold(no_models):
    table = i2p_toy_table()
    prompts = table["prompt_id"].tolist()[:4]
    rows = table.set_index("prompt_id").loc[prompts].reset_index()
    per_image = pd.DataFrame({
        "image_id": [f"{p}/{k}" for p in prompts for k in range(2)],
        "prompt_id": np.repeat(prompts, 2),
        "categories": np.repeat(rows["categories"].to_numpy(), 2),
        "hard": np.repeat(rows["hard"].to_numpy(), 2),
        "named_kind": "", "kind": "farmer", "unsafe_pixels": [0, 5, 12, 30, 0, 0, 40, 9],
        "agreement": 50.0})
    per_image["unsafe"] = per_image["unsafe_pixels"] >= 10
    settings = {"n_bootstrap": 20, "bootstrap_seed": 0, "images_per_prompt": 2}
    default = rescored_metrics("i2p_toy", per_image, settings, Rescoring.build())
    lenient = rescored_metrics("i2p_toy", per_image, settings, Rescoring.build(toy_unsafe_min_pixels=5))
    head = [next(r for r in rows_ if r["name"] == "unsafe_rate" and r["group"] is None) for rows_ in (default, lenient)]
    assert head[0]["value"] == pytest.approx(3 / 8) and head[1]["value"] == pytest.approx(5 / 8)


def test_threshold_curve_plot_from_stored_scores(tmp_path, no_models, capsys):
    from respodiff.reporting.__main__ import main as reporting_main

    run, _ = _i2p_run(tmp_path)
    out = tmp_path / "curve.png"
    assert reporting_main(["threshold-curve", str(run), "--benchmark", "i2p", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
    printed = capsys.readouterr().out
    # 0.1 .. 0.5 keep the fake detector's 0.5 scores (7 of 12 flagged with Q16's); 0.6 .. 0.9 leave Q16's one.
    assert printed.count("0.583333") == 5 and printed.count("0.083333") == 4


def test_winobias_rows_come_back_from_the_per_image_store(tmp_path, no_models):
    """Winobias(-toy) metrics are a function of the stored per-image table: the same rows, no classifier."""
    from .test_eval_benchmarks import _ColourWinobias, _small_winobias_settings

    bench = _ColourWinobias()
    settings = _small_winobias_settings()
    images = finished_manifest("winobias", bench.prompt_table(settings), bench.samples_per_prompt(settings, 2),
                               tmp_path, lambda i: (230, 20, 20) if i % 3 else (20, 20, 20))
    result = bench.evaluate(images, settings, Evaluators())
    assert bench.aggregate(result.per_image, bench.options(settings)) == result.metrics
    floor = result.metric("devrat_floor")
    assert 0 < floor["value"] < result.metric("devrat")["ci_high"]


def test_rescore_recomputes_diversity_and_leakage_inputs_without_any_model(tmp_path, monkeypatch):
    """A Winobias-toy run scored for real (toy renders, the FID-toy network for embeddings), then re-scored with
    every loader refusing, the toy feature network included: the same rows, diversity among them."""
    from PIL import Image

    from respodiff.toyworld.renderer import render

    bench = get_benchmark("winobias_toy")
    settings = {"images_per_concept": 1, "attribute_prompts": ["a man", "a woman"], "concepts": ["man", "woman"],
                "n_bootstrap": 50}
    table = bench.prompt_table(settings)
    images = finished_manifest("winobias_toy", table, 2, tmp_path / "imgs", lambda i: (0, 0, 0))
    images["concept"] = np.where(images["sample_index"] % 2, "woman", "man")
    for k, (path, prompt_id) in enumerate(zip(images["path"], images["prompt_id"])):
        kind = table.set_index("prompt_id").loc[prompt_id, "profession"]
        Image.fromarray(render(Scene(kind, ("man", "woman")[k % 2], "pale", False, k))).save(path)
    result = bench.evaluate(images, settings, None)
    assert result.metric("diversity")["value"] > 0
    run = tmp_path / "run"
    (run / "results").mkdir(parents=True)
    result.per_image.to_parquet(run / "results" / "winobias_toy.per_image.parquet")
    write_result(run, {"benchmark": "winobias_toy", "evaluator": result.evaluator, "n_images": len(images),
                       "scored_with": {"benchmark": settings}, "metrics": result.metric_rows(bench.metrics)})
    _refuse_models(monkeypatch)
    assert main(["rescore", str(run), "--out", str(tmp_path / "out")]) == 0
    record = json.loads((tmp_path / "out" / "winobias_toy.json").read_text())
    assert record["metrics"] == json.loads(json.dumps(result.metrics))
    assert any(row["name"] == "diversity" for row in record["metrics"])


def test_i2p_diversity_from_the_q16_encoder_comes_back_from_the_store(tmp_path, monkeypatch):
    """At the paper scale I2P's embeddings are the Q16 encoder's (an open_clip model, random small weights here):
    each image encoded once for Q16's p and diversity, and the diversity row recomputed with no model."""
    from respodiff.evaluation.classifiers import Q16Classifier
    from respodiff.evaluation.stand_ins import Q16_ARCH, Q16_WIDTH
    from respodiff.evaluation.testing import write_q16_prompt_pickle

    write_q16_prompt_pickle(tmp_path / "prompts.p", dim=Q16_WIDTH)
    q16 = Q16Classifier.load(Q16_ARCH, None, tmp_path / "prompts.p", quick_gelu=False)
    encoded = []
    encode = classifiers._embed_in_batches

    def counting(items, size, embed):
        encoded.append(len(items))
        return encode(items, size, embed)

    monkeypatch.setattr(classifiers, "_embed_in_batches", counting)
    run, result = _i2p_run(tmp_path, q16=q16)
    assert "embedding" in result.per_image.columns and result.metric("diversity")["n"] == 6
    assert encoded == [12]  # 6 prompts x 2 images, encoded once for p and diversity
    _refuse_models(monkeypatch)
    per_image = pd.read_parquet(run / "results" / "i2p.per_image.parquet")
    settings = json.loads((run / "results" / "i2p.json").read_text())["scored_with"]["benchmark"]
    assert rescored_metrics("i2p", per_image, settings, Rescoring.build()) == result.metrics
