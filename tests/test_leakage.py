"""Leakage of safety (and fairness) modules on caption benchmarks: COCO-toy's stored attributes, `compare`'s rows,
and the paper-scale pieces (caption facts, CLIP zero-shot columns)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from respodiff.errors import MissingAssetError
from respodiff.evaluation.compare import caption_rows, compare_runs
from respodiff.evaluation.leakage import (
    LEAKAGE_COLUMNS,
    caption_attribute_columns,
    caption_facts,
    target_attribute,
)
from respodiff.evaluation.registry import get_benchmark
from respodiff.evaluation.testing import save_tiny_clip, write_images
from respodiff.toyworld import coco_toy_reference, coco_toy_table
from respodiff.toyworld.classifiers import parse_caption

SAFETY = {"concepts": {"name": "toy_safety", "items": {"violence": {}}}}
GENDER = {"concepts": {"name": "toy_gender", "items": {"man": {}, "woman": {}}}}


def _coco_store(n_per_subject: int = 40) -> pd.DataFrame:
    """A COCO-toy-shaped store: two subjects, a tenth of the captions naming race, a few naming gender."""
    subjects = np.repeat(["doctor", "person"], n_per_subject)
    n = len(subjects)
    k = np.arange(n)
    return pd.DataFrame({"image_id": [f"coco_toy/c{i}/0" for i in k], "prompt_id": [f"c{i}" for i in k],
                         "caption_type": "kind_template", "agreement": 100.0, "kind": "doctor",
                         "gender": np.where(k % 4 == 0, "woman", "man"), "race": np.where(k % 5 == 0, "tan", "pale"),
                         "names_gender": k % 7 == 0, "names_race": k % 10 == 3, "subject": subjects})


def _rows(rows, name, **group):
    return next(r for r in rows if r["name"] == name and r["group"] == (group or None))


def test_safety_leakage_rows_from_two_stores(tmp_path):
    base = _coco_store()
    # The safety module draws every doctor dark; gender untouched; captions that name race keep their race.
    method = base.copy()
    doctors = (method["subject"] == "doctor") & ~method["names_race"]
    method.loc[doctors, "race"] = "dark"
    method["agreement"] = 90.0
    for run, frame in (("base", base), ("method", method)):
        (tmp_path / run / "results").mkdir(parents=True)
        frame.to_parquet(tmp_path / run / "results" / "coco_toy.per_image.parquet")
        record = {"schema": "respodiff.result/1", "benchmark": "coco_toy", "metrics": [], "config": SAFETY}
        (tmp_path / run / "results" / "coco_toy.json").write_text(json.dumps(record))
    [path] = compare_runs(tmp_path / "base", tmp_path / "method", n_boot=200)
    written = json.loads(path.read_text())
    assert written["benchmark"] == "coco_toy_vs_base"
    rows = written["metrics"]
    race = _rows(rows, "leakage_tv", attribute="race")
    # Doctors: pale 0.8 / tan 0.2 -> dark 1.0 is a TV of 1; the person subject is untouched: mean 0.5.
    assert race["value"] == pytest.approx(0.5) and race["ci_low"] > _rows(rows, "leakage_tv_floor",
                                                                           attribute="race")["value"]
    assert race["n"] == int((~base["names_race"]).sum())
    assert _rows(rows, "leakage_tv", attribute="gender")["value"] == 0.0
    assert _rows(rows, "agreement_diff")["value"] == pytest.approx(-10.0)


def test_the_targeted_attribute_is_not_leakage():
    base = _coco_store()
    method = base.assign(gender="woman")
    rows = caption_rows(base, method, {"benchmark": "coco_toy", "config": GENDER}, 50, 0)
    assert not any((r["group"] or {}).get("attribute") == "gender" for r in rows)
    assert _rows(rows, "leakage_tv", attribute="race")["value"] == 0.0
    assert target_attribute(GENDER, {"gender": ("man", "woman"), "race": ("pale",)}) == "gender"
    assert target_attribute(SAFETY, {"gender": ("man", "woman")}) is None


def test_compare_skips_caption_stores_without_attributes_and_refuses_an_old_base(tmp_path):
    for run, frame in (("base", _coco_store().drop(columns=list(LEAKAGE_COLUMNS))), ("method", _coco_store())):
        (tmp_path / run / "results").mkdir(parents=True)
        frame.to_parquet(tmp_path / run / "results" / "coco_toy.per_image.parquet")
        (tmp_path / run / "results" / "coco_toy.json").write_text(json.dumps({"benchmark": "coco_toy"}))
    assert compare_runs(tmp_path / "method", tmp_path / "base", n_boot=10) == []  # no leakage columns: nothing pairs
    with pytest.raises(MissingAssetError, match="no leakage columns"):
        compare_runs(tmp_path / "base", tmp_path / "method", n_boot=10)


def test_coco_toy_keeps_what_the_exact_classifiers_read(tmp_path):
    bench = get_benchmark("coco_toy")
    settings = {"size": 200, "n_bootstrap": 20}
    captions = coco_toy_table(200)
    folder = tmp_path / "imgs"
    folder.mkdir()
    paths = []
    for _, row in captions.iterrows():  # the world's own render of each caption: what a perfect model draws
        path = folder / f"{row['caption_id']}.png"
        Image.fromarray(coco_toy_reference(row)).save(path)
        paths.append(str(path))
    images = pd.DataFrame({"image_id": [f"coco_toy/{c}/0" for c in captions["caption_id"]],
                           "prompt_id": captions["caption_id"], "prompt": captions["caption"], "path": paths,
                           "status": "done"})
    store = bench.evaluate(images, settings, None).per_image
    truth = captions.set_index("caption_id").loc[store["prompt_id"]]
    assert (store["gender"].to_numpy() == truth["gender"].to_numpy()).all()
    assert (store["race"].to_numpy() == truth["race"].to_numpy()).all()
    named = store.set_index("prompt_id")
    assert named.loc[truth.index[truth["caption"].str.contains(r"\bwoman\b")], "names_gender"].all()
    assert set(store["subject"]) <= {"person", *captions["kind"]}
    assert (store.loc[truth["caption_type"].isin(["person", "scene"]).to_numpy(), "subject"] == "person").all()


def test_matched_fid_toy_does_not_charge_a_changed_attribute(tmp_path):
    """A perfect drawer that flips gender wherever the caption leaves it open: the plain FID-toy (references with the
    planted attributes) rises, the matched one (references re-rendered with what the image shows) stays at zero."""
    from respodiff.toyworld import Scene
    from respodiff.toyworld.renderer import render

    bench = get_benchmark("coco_toy")
    captions = coco_toy_table(200)
    paths = []
    for _, row in captions.iterrows():
        flip = "gender" not in parse_caption(row["caption"])
        gender = {"man": "woman", "woman": "man"}[row["gender"]] if flip else row["gender"]
        path = tmp_path / f"{row['caption_id']}.png"
        Image.fromarray(render(Scene(row["kind"], gender, row["race"], bool(row["unsafe"]),
                                     int(row["render_seed"])))).save(path)
        paths.append(str(path))
    images = pd.DataFrame({"image_id": [f"coco_toy/{c}/0" for c in captions["caption_id"]],
                           "prompt_id": captions["caption_id"], "prompt": captions["caption"], "path": paths,
                           "status": "done"})
    result = bench.evaluate(images, {"size": 200, "n_bootstrap": 0}, None)
    assert result.metric("fid_toy_matched")["value"] < 1.0
    assert result.metric("fid_toy")["value"] > 20.0


def test_paper_caption_facts():
    facts = caption_facts(["A man riding a horse.", "a black cat on a white sofa", "Two people on a bench",
                           "a plate of food", "A woman and her asian friend"])
    assert facts["names_gender"].tolist() == [True, False, False, False, True]
    assert facts["names_race"].tolist() == [False, True, False, False, True]
    assert facts["subject"].tolist() == ["person", "", "person", "", "person"]


def test_caption_attribute_columns_with_a_tiny_clip(tmp_path, monkeypatch):
    from respodiff.evaluation import classifiers
    from respodiff.evaluation.classifiers import ClipScorer

    clip = ClipScorer.from_folder(save_tiny_clip(tmp_path / "clip"))
    encoded_images = []
    encode = classifiers._embed_in_batches

    def counting(items, size, embed):
        encoded_images.extend(item for item in items if str(item).endswith(".png"))
        return encode(items, size, embed)

    monkeypatch.setattr(classifiers, "_embed_in_batches", counting)
    paths = [str(p) for p in write_images(tmp_path / "imgs", [f"i{k}" for k in range(6)],
                                          lambda i: (40 * i, 100, 200 - 30 * i))]
    captions = ["a man on a bike", "people at a table", "a dog", "a girl", "a black dog", "someone cooking"]
    scores = clip.scores(paths, captions)  # what coco30k computes first; the columns reuse its image embeddings
    columns = caption_attribute_columns(clip, paths, captions)
    assert set(columns) == set(LEAKAGE_COLUMNS) and len(scores) == 6
    assert len(encoded_images) == 6  # each image encoded once, for CLIP score and both attributes
    assert set(columns["gender"]) <= {"man", "woman"} and set(columns["race"]) <= {"white", "black", "asian"}
    with pytest.raises(ValueError, match="6 images but 5 captions"):
        caption_attribute_columns(clip, paths, captions[:5])


def test_paper_winobias_leakage_uses_the_zero_shot_labels():
    from respodiff.evaluation.compare import winobias_rows

    n = 80
    k = np.arange(n)
    base = pd.DataFrame({"image_id": [f"w{i}" for i in k], "prompt_id": [f"p{i // 10}" for i in k],
                         "profession": np.repeat(["doctor", "nurse"], n // 2), "attribute": "man", "winoalign": 30.0,
                         "race": np.where(k % 3 == 0, "black", "white")})
    method = base.assign(attribute=np.where(k % 2 == 0, "woman", "man"), race="asian")
    record = {"benchmark": "winobias", "evaluator": {"attribute": "gender", "attribute_labels": ["man", "woman"]}}
    rows = winobias_rows(base, method, record, 100, 0)
    assert _rows(rows, "leakage_tv", attribute="race")["value"] == pytest.approx(1.0)
    assert _rows(rows, "devrat_diff")["value"] == pytest.approx(-1.0)
