"""Manifests and concept plans, without a model: rows, seeds, paths, weights, balanced and uniform sampling, errors."""

from __future__ import annotations

import json
import random
from collections import Counter

import pandas as pd
import pytest

from respodiff.errors import ConfigError
from respodiff.generation import ConceptPlan, SamplerSettings, build_manifest
from respodiff.seeding import stable_seed

SAMPLER = SamplerSettings(steps=3, guidance_scale=7.5, height=32, width=32, batch_size=3, eta=0.0)
TABLE = pd.DataFrame({"prompt_id": ["doctor", "nurse"], "prompt": ["a photo of a doctor", "a nurse"]})


def test_manifest_rows_seeds_paths_and_weights():
    table = pd.DataFrame({"prompt_id": ["doctor", "a/b c"], "prompt": ["p1", "p2"], "category": ["x", "y"]})
    fair = build_manifest(
        "bench", table, 2, ConceptPlan("fair", ["man", "woman"]), SAMPLER, negative_prompt="ugly"
    )
    none = build_manifest("bench", table, 2, ConceptPlan(), SAMPLER)
    assert fair["image_id"].tolist() == ["bench/doctor/0", "bench/doctor/1", "bench/a/b c/0", "bench/a/b c/1"]
    # The same seed for every method: grids compare like with like.
    assert (
        fair["seed"].tolist()
        == none["seed"].tolist()
        == [stable_seed("bench", pid, i) for pid in ("doctor", "a/b c") for i in range(2)]
    )
    assert fair["path"].iloc[0] == "images/doctor/0.png"
    assert (
        fair["path"].iloc[2].startswith("images/a_b_c-")
        and "/" not in fair["path"].iloc[2][len("images/") : -6]
    )
    assert set(fair["status"]) == {"pending"} and set(fair["negative_prompt"]) == {"ugly"}
    assert fair["category"].tolist() == ["x", "x", "y", "y"]
    assert [json.loads(w) for w in fair["concept_weights"]][:2] == [{"man": 1.0}, {"woman": 1.0}]
    assert set(none["concept_weights"]) == {"{}"} and set(none["concept"]) == {"none"}
    assert (fair[["steps", "height", "width"]].iloc[0].tolist()) == [3, 32, 32]

    safety = build_manifest("i2p", table, 1, ConceptPlan("sum", ["violence", "sexual"]), SAMPLER)
    assert json.loads(safety["concept_weights"].iloc[0]) == {"violence": 1.0, "sexual": 1.0}
    assert set(safety["concept"]) == {"sum"}
    compose = build_manifest(
        "w", table, 1, ConceptPlan("compose", weights={"gender/woman": 0.6, "race/black": 0.4}), SAMPLER
    )
    assert json.loads(compose["concept_weights"].iloc[0]) == {"gender/woman": 0.6, "race/black": 0.4}


def test_balanced_plan_gives_equal_counts():
    table = pd.DataFrame({"prompt_id": [f"p{i}" for i in range(5)], "prompt": ["a person"] * 5})
    plan = ConceptPlan("fair", ["white", "black", "asian"], sampling="balanced")
    manifest = build_manifest("race", table, 6, plan, SAMPLER)
    for _, rows in manifest.groupby("prompt_id"):
        assert Counter(rows["concept"]) == {"white": 2, "black": 2, "asian": 2}
        assert rows["concept"].tolist() == [plan.concepts[i % 3] for i in rows["sample_index"]]
    # One image per prompt (COCO) still alternates instead of giving every image the first concept.
    coco = build_manifest(
        "coco", pd.DataFrame({"prompt_id": list("abcd"), "prompt": ["x"] * 4}), 1, plan, SAMPLER
    )
    assert coco["concept"].tolist() == ["white", "black", "asian", "white"]


def test_uniform_plan_is_deterministic_per_seed():
    table = pd.DataFrame({"prompt_id": [f"p{i}" for i in range(10)], "prompt": ["a person"] * 10})
    plan = ConceptPlan("fair", ["man", "woman"], sampling="uniform")
    first = build_manifest("gender", table, 4, plan, SAMPLER)
    again = build_manifest("gender", table.iloc[::-1], 4, plan, SAMPLER)
    by_id = dict(zip(again["image_id"], again["concept"]))
    assert [by_id[i] for i in first["image_id"]] == first[
        "concept"
    ].tolist()  # a function of the image, not order
    expected = [plan.concepts[int(random.Random(seed).random() * 2)] for seed in first["seed"]]
    assert first["concept"].tolist() == expected
    assert 10 < (first["concept"] == "man").sum() < 30  # both drawn, roughly evenly


def test_plan_and_manifest_errors():
    with pytest.raises(ConfigError, match="mode"):
        ConceptPlan("random")
    with pytest.raises(ConfigError, match="needs at least one concept"):
        ConceptPlan("fair", [])
    with pytest.raises(ConfigError, match="needs weights"):
        ConceptPlan("compose")
    with pytest.raises(ConfigError, match="repeats prompt ids"):
        build_manifest(
            "b", pd.DataFrame({"prompt_id": ["a", "a"], "prompt": ["x", "y"]}), 1, ConceptPlan(), SAMPLER
        )
    with pytest.raises(ConfigError, match="manifest column names"):
        build_manifest("b", TABLE.assign(seed=1), 1, ConceptPlan(), SAMPLER)
