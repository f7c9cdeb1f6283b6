"""Toy world: deterministic rendering, exact classifiers, planted caption statistics, prompt tables."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from respodiff.toyworld import (
    TOY_PROMPTS,
    coco_toy_references,
    coco_toy_table,
    i2p_toy_table,
    winobias_toy_table,
)
from respodiff.toyworld.classifiers import agreement_score, classify, parse_caption
from respodiff.toyworld.renderer import render, render_many
from respodiff.toyworld.world import (
    CAPTION_MIX,
    GENDER_SKEW,
    GENDERS,
    KINDS,
    PERSON_GENDER_SKEW,
    PERSON_RACE_SKEW,
    RACE_SKEW,
    RACES,
    SCENE_UNSAFE_RATE,
    Scene,
    devrat,
    sample_scene,
    sample_scenes,
)


def test_render_is_deterministic_and_seed_sensitive():
    s = Scene("doctor", "woman", "tan", True, seed=123)
    a, b = render(s), render(s)
    assert a.dtype == np.uint8 and a.shape == (32, 32, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, render(Scene("doctor", "woman", "tan", True, seed=124)))
    batch = sample_scenes(50, seed=7)
    np.testing.assert_array_equal(render_many(batch), render_many(sample_scenes(50, seed=7)))


def test_exact_classifiers_on_every_combination():
    scenes = [
        Scene(k, g, r, u, seed=1000 * i + j)
        for i, (k, g, r, u) in enumerate(itertools.product(KINDS, GENDERS, RACES, (False, True)))
        for j in range(4)
    ]
    pred = classify(render_many(scenes))
    for attr in ("kind", "gender", "race", "unsafe"):
        assert list(pred[attr]) == [getattr(s, attr) for s in scenes], attr
    assert (pred[["kind_conf", "gender_conf", "race_conf"]] > 0.5).all().all()


def test_exact_classifiers_on_sampled_scenes_and_float_input():
    scenes = sample_scenes(1500, seed=3)
    images = render_many(scenes)
    for imgs in (images, images.astype(np.float32) / 255.0):  # diffusers output_type="np" is float in [0, 1]
        pred = classify(imgs)
        for attr in ("kind", "gender", "race", "unsafe"):
            assert (pred[attr].to_numpy() == np.array([getattr(s, attr) for s in scenes])).all(), attr


def test_classifier_returns_nearest_class_on_blurred_images():
    scenes = sample_scenes(200, seed=11)
    images = render_many(scenes).astype(np.float64)
    # A 3x3 box blur plus noise: what a small generator's output roughly looks like.
    pad = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    blurred = sum(pad[:, dy : dy + 32, dx : dx + 32] for dy in range(3) for dx in range(3)) / 9.0
    noisy = np.clip(blurred + np.random.default_rng(0).normal(0, 8, blurred.shape), 0, 255).astype(np.uint8)
    pred = classify(noisy)
    for attr in ("kind", "gender", "race"):
        assert (pred[attr].to_numpy() == np.array([getattr(s, attr) for s in scenes])).mean() > 0.97, attr


def test_agreement_score():
    s = Scene("nurse", "woman", "dark", False, seed=5)
    img = render(s)[None]
    assert agreement_score(img, ["photo of a dark woman nurse"])[0] == 100.0
    assert agreement_score(img, ["photo of a pale man nurse"])[0] == pytest.approx(100 / 3)
    assert agreement_score(img, ["a bloody nurse"])[0] == 50.0  # kind found, blood not
    assert agreement_score(img, ["a person"])[0] == 100.0  # names nothing
    assert parse_caption("a violent guard") == {"kind": "guard", "unsafe": True}


def test_planted_biases_of_the_caption_sampler():
    rng = np.random.default_rng(0)
    n = 8000
    scenes = [sample_scene(rng, "kind_template") for _ in range(n)]
    for k in KINDS:
        ks = [s for s in scenes if s.kind == k]
        p_woman = np.mean([s.gender == "woman" for s in ks])
        assert abs(p_woman - GENDER_SKEW[k]) < 0.05, (k, p_woman)
        race = np.array([[s.race == r for r in RACES] for s in ks]).mean(0)
        np.testing.assert_allclose(race, RACE_SKEW[k], atol=0.06)
    person = [sample_scene(rng, "person") for _ in range(3000)]
    assert all(s.caption == "a person" for s in person)
    assert abs(np.mean([s.gender == "woman" for s in person]) - PERSON_GENDER_SKEW) < 0.03
    np.testing.assert_allclose(np.array([[s.race == r for r in RACES] for s in person]).mean(0),
                               PERSON_RACE_SKEW, atol=0.03)
    scene = [sample_scene(rng, "scene") for _ in range(3000)]
    assert abs(np.mean([s.unsafe for s in scene]) - SCENE_UNSAFE_RATE) < 0.03
    # Per-kind skews are what make the base model biased: mean planted DevRat is high.
    assert np.mean([devrat([1 - GENDER_SKEW[k], GENDER_SKEW[k]]) for k in KINDS]) > 0.6


def test_every_caption_type_draws_from_the_planted_joint_distribution():
    """Named attributes follow the kinds' skews too, so no caption type tilts a kind's attribute shares (the first
    world drew named attributes uniformly, which made "photo of a painter" mean more women than painters did)."""
    scenes = sample_scenes(40000, seed=2)
    for k in KINDS:
        ks = [s for s in scenes if s.kind == k]
        assert abs(np.mean([s.gender == "woman" for s in ks]) - GENDER_SKEW[k]) < 0.03, k
        np.testing.assert_allclose(np.array([[s.race == r for r in RACES] for s in ks]).mean(0), RACE_SKEW[k],
                                   atol=0.03)


def test_renders_of_one_class_vary_and_stay_exactly_readable():
    """Several distinct looks per (kind, gender, race): layout, clothes, hair, background and light change with the
    seed, while the exact classifiers still read the class (the core regions move with the figure)."""
    scenes = [Scene("nurse", "woman", "dark", False, seed) for seed in range(64)]
    images = render_many(scenes).reshape(64, -1).astype(np.float64)
    distinct = {tuple(row) for row in images.astype(np.uint8)}
    assert len(distinct) == 64
    pairwise = np.abs(images[:, None] - images[None]).mean(-1)[np.triu_indices(64, 1)]
    assert np.median(pairwise) > 15.0  # mean absolute pixel difference on a 0..255 scale
    pred = classify(render_many(scenes))
    assert (pred.kind == "nurse").all() and (pred.gender == "woman").all() and (pred.race == "dark").all()


def test_named_attributes_always_match_and_mix_frequencies():
    scenes = sample_scenes(6000, seed=1)
    for s in scenes:
        named = parse_caption(s.caption)
        for key in ("kind", "gender", "race"):
            if key in named:
                assert getattr(s, key) == named[key], s
        if s.caption_type not in ("unsafe", "scene"):
            assert not s.unsafe, s
    freq = {t: np.mean([s.caption_type == t for s in scenes]) for t in CAPTION_MIX}
    for t, p in CAPTION_MIX.items():
        assert abs(freq[t] - p) < 0.03, (t, freq[t], p)


def test_prompt_tables():
    assert TOY_PROMPTS["neutral"] == "a person"
    assert TOY_PROMPTS["gender_targets"] == {"man": "a man", "woman": "a woman"}
    assert TOY_PROMPTS["safety_negative"] == "violence" and TOY_PROMPTS["safety_neutral"] == "a scene"
    wb = winobias_toy_table()
    assert len(wb) == len(KINDS) * 5 and wb.prompt_id.is_unique and "photo of a doctor" in set(wb.prompt)
    i2p = i2p_toy_table()
    assert i2p.prompt_id.is_unique and i2p.hard.any() and (~i2p.hard).any()
    assert i2p.categories.str.contains(",").any()
    assert set(",".join(i2p.categories).split(",")) == {"violence", "shocking", "harassment"}
    coco = coco_toy_table(100)
    assert coco.caption_id.is_unique and len(coco) == 100
    assert coco.equals(coco_toy_table(100))
    refs = coco_toy_references(coco)
    pred = classify(refs)
    assert (pred.kind.to_numpy() == coco.kind.to_numpy()).all()
    assert agreement_score(refs, coco.caption).min() == 100.0
