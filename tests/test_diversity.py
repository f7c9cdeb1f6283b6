"""Within-prompt diversity: its definition, the toy and paper benchmarks' stores, recomputation, the table note."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from respodiff.evaluation.compare import compare_runs
from respodiff.evaluation.diversity import (
    EMBEDDING_COLUMN,
    diversity_rows,
    embedding_column,
    mean_pairwise_distance,
    per_prompt_diversity,
)
from respodiff.evaluation.evaluator_settings import EvaluatorSettings
from respodiff.evaluation.evaluators import Evaluators
from respodiff.evaluation.registry import get_benchmark
from respodiff.evaluation.testing import finished_manifest, save_tiny_clip
from respodiff.toyworld import Scene
from respodiff.toyworld.fid_features import toy_fid_features
from respodiff.toyworld.renderer import render


def _store(embeddings: np.ndarray, prompts) -> pd.DataFrame:
    return pd.DataFrame({"image_id": [f"i{k}" for k in range(len(prompts))], "prompt_id": list(prompts),
                         EMBEDDING_COLUMN: embedding_column(embeddings)})


def _brute_force(features: np.ndarray) -> float:
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    return float(np.mean([1 - unit[i] @ unit[j] for i, j in itertools.permutations(range(len(unit)), 2)]))


def test_identical_images_score_zero_and_spread_raises_diversity():
    rng = np.random.default_rng(0)
    centre = rng.standard_normal(64)
    assert mean_pairwise_distance(np.tile(centre / np.linalg.norm(centre), (6, 1))) == pytest.approx(0, abs=1e-12)
    values = []
    for spread in (0.0, 0.1, 0.3, 1.0, 3.0):
        features = centre + spread * rng.standard_normal((8, 64))
        values.append(per_prompt_diversity(_store(features, ["p"] * 8))["p"])
    assert values[0] == pytest.approx(0, abs=1e-6)
    assert all(a < b for a, b in zip(values, values[1:])), values
    # Opposite directions are the farthest apart a cosine distance allows.
    assert mean_pairwise_distance(np.array([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(2.0)


def test_the_sum_formula_equals_the_pairwise_mean_and_prompts_are_separate():
    rng = np.random.default_rng(1)
    features = rng.standard_normal((12, 16))
    prompts = ["a"] * 5 + ["b"] * 6 + ["lonely"]
    values = per_prompt_diversity(_store(features, prompts))
    assert list(values.index) == ["a", "b"]  # a prompt with one image has no pair
    # Stored in float16: within 1e-3 of the exact value.
    assert values["a"] == pytest.approx(_brute_force(features[:5]), abs=1e-3)
    assert values["b"] == pytest.approx(_brute_force(features[5:11]), abs=1e-3)
    [row] = diversity_rows(_store(features, prompts), n_bootstrap=200, seed=0)
    assert row["value"] == pytest.approx(values.mean()) and row["n"] == 2
    assert row["ci_low"] <= row["value"] <= row["ci_high"]
    assert diversity_rows(pd.DataFrame({"prompt_id": ["a"]}), n_bootstrap=10, seed=0) == []  # no embeddings stored


def _write_renders(folder, frame: pd.DataFrame, scene_of) -> pd.DataFrame:
    """Toy renders (exact world pictures) as a finished manifest's images."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, row in enumerate(frame.itertuples()):
        path = folder / f"{k}.png"
        Image.fromarray(render(scene_of(k, row))).save(path)
        paths.append(str(path))
    return frame.assign(path=paths)


def test_i2p_toy_diversity_is_zero_for_identical_images_and_recomputes_from_the_store(tmp_path):
    bench = get_benchmark("i2p_toy")
    table = bench.prompt_table({}).head(4)
    settings = {"images_per_prompt": 3, "n_bootstrap": 50}
    manifest = finished_manifest("i2p_toy", table, 3, tmp_path / "unused", lambda i: (0, 0, 0))
    same = _write_renders(tmp_path / "same", manifest, lambda k, row: Scene("chef", "man", "pale", False, 7))
    varied = _write_renders(tmp_path / "varied", manifest,
                            lambda k, row: Scene(("chef", "nurse", "pilot")[k % 3], "man", "pale", False, 7))
    bench.prompt_table = lambda s: table  # the first four prompts only
    flat = bench.evaluate(same, settings, None)
    spread = bench.evaluate(varied, settings, None)
    assert flat.metric("diversity")["value"] == pytest.approx(0, abs=1e-6)
    assert spread.metric("diversity")["value"] > 0.01
    # The value written at evaluation is the one the stored embeddings give back, and it is the direct computation.
    stored = tmp_path / "store.parquet"
    spread.per_image.to_parquet(stored)
    assert diversity_rows(pd.read_parquet(stored), n_bootstrap=50, seed=0,
                          stream=("i2p_toy",)) == [spread.metric("diversity")]
    pixels = np.stack([np.asarray(Image.open(p)) for p in varied["path"][:3]])
    assert per_prompt_diversity(spread.per_image).iloc[0] == pytest.approx(_brute_force(toy_fid_features(pixels)),
                                                                           abs=1e-3)


def test_winobias_keeps_clip_embeddings_and_the_untargeted_attribute(tmp_path):
    clip_dir = save_tiny_clip(tmp_path / "clip")
    from respodiff.evaluation.classifiers import ClipScorer

    bench = get_benchmark("winobias")
    settings = {"professions": ["Doctor", "Nurse"], "templates": ["Photo of {p}", "Portrait of {p}"],
                "images_per_concept": 2, "attribute_prompts": ["a man", "a woman"], "n_bootstrap": 50,
                "concepts": ["man", "woman"]}
    images = finished_manifest("winobias", bench.prompt_table(settings), 4, tmp_path / "imgs",
                               lambda i: (30 * (i % 8), 100, 200 - 20 * (i % 8)))
    clip = ClipScorer.from_folder(clip_dir)
    result = bench.evaluate(images, settings, Evaluators(EvaluatorSettings(), clip=clip))
    store = result.per_image
    assert set(store["race"]) <= {"white", "black", "asian"} and "gender" not in store.columns
    assert len(store[EMBEDDING_COLUMN].iloc[0]) == 16
    row = result.metric("diversity")
    assert row["value"] == pytest.approx(per_prompt_diversity(store).mean()) and row["n"] == 4
    assert bench.aggregate(store, bench.options(settings)) == result.metrics


def _fake_run(folder, frame: pd.DataFrame, benchmark: str, method: str) -> None:
    (folder / "results").mkdir(parents=True)
    frame.to_parquet(folder / "results" / f"{benchmark}.per_image.parquet")
    record = {"schema": "respodiff.result/1", "benchmark": benchmark, "experiment": "safety_toy", "method": method,
              "metrics": [], "config": {}, "evaluator": {}}
    (folder / "results" / f"{benchmark}.json").write_text(json.dumps(record))


def test_compare_writes_a_paired_diversity_difference(tmp_path):
    rng = np.random.default_rng(2)
    prompts = np.repeat([f"p{k}" for k in range(10)], 4)
    centres = np.repeat(rng.standard_normal((10, 32)), 4, axis=0)
    base = pd.DataFrame({"image_id": [f"i{k}" for k in range(40)], "prompt_id": prompts, "unsafe": True,
                         EMBEDDING_COLUMN: embedding_column(centres + rng.standard_normal((40, 32)))})
    collapsed = base.assign(unsafe=False, **{EMBEDDING_COLUMN: embedding_column(centres + 0.1 * rng.standard_normal(
        (40, 32)))})
    _fake_run(tmp_path / "base", base, "i2p_toy", "none")
    _fake_run(tmp_path / "method", collapsed, "i2p_toy", "respodiff")
    [path] = compare_runs(tmp_path / "base", tmp_path / "method", n_boot=200)
    rows = {r["name"]: r for r in json.loads(path.read_text())["metrics"]}
    diff = rows["diversity_diff"]
    expected = (per_prompt_diversity(collapsed) - per_prompt_diversity(base)).mean()
    assert diff["value"] == pytest.approx(expected) and diff["ci_high"] < 0 and diff["n"] == 10
    assert rows["unsafe_rate_diff"]["value"] == pytest.approx(-1.0)


def test_tables_note_the_methods_whose_diversity_falls(tmp_path):
    from respodiff.reporting.specs import parse_spec
    from respodiff.reporting.tables import build_table, render_markdown

    spec = parse_spec({
        "title": "t",
        "columns": [{"id": "d", "benchmark": "i2p_toy_vs_base", "metric": "diversity_diff",
                     "worse_note": "Diversity below the base model's"}],
        "rows": [{"label": "Flat", "match": {"method": "flat"}}, {"label": "Richer", "match": {"method": "rich"}},
                 {"label": "Unclear", "match": {"method": "same"}}]}, "t")
    assert spec.columns[0].label == "ΔDiversity" and spec.columns[0].higher_is_better

    def result(method, value, low, high):
        return {"source": method, "experiment": "x", "run_name": method, "method": method, "model": "toy",
                "concepts": "c", "benchmark": "i2p_toy_vs_base", "created": "1", "git_hash": "", "overrides": [],
                "config": {}, "metric": "diversity_diff", "group": "", "value": value, "ci_low": low,
                "ci_high": high, "n": 10, "higher_is_better": True}

    frame = pd.DataFrame([result("flat", -0.1, -0.15, -0.05), result("rich", 0.1, 0.05, 0.15),
                          result("same", -0.01, -0.05, 0.03)])
    text = render_markdown(build_table(spec, frame))
    assert "- Diversity below the base model's: Flat." in text
    with pytest.raises(Exception, match="worse_note needs a paired-difference column"):
        parse_spec({"title": "t", "columns": [{"id": "d", "benchmark": "i2p_toy", "metric": "diversity",
                                               "worse_note": "x"}], "rows": [{"label": "a", "match": {}}]}, "t")
