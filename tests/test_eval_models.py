"""Evaluation models through the product's loaders: tiny CLIP, Q16 on open_clip, NudeNet for real, FID plumbing."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from respodiff.errors import ConfigError, MissingAssetError
from respodiff.evaluation.assets import check_evaluator_assets
from respodiff.evaluation.classifiers import NudeNetClassifier, Q16Classifier
from respodiff.evaluation.evaluator_settings import (
    RANDOM_WEIGHTS,
    ClipSettings,
    EvaluatorSettings,
    Q16Settings,
)
from respodiff.evaluation.evaluators import Evaluators
from respodiff.evaluation.quality import FidScorer, reference_key
from respodiff.evaluation.safety import NUDENET_LABELS, q16_probabilities
from respodiff.evaluation.setup import EvalContext, build_evaluators, validate_eval
from respodiff.evaluation.testing import (
    QuadrantColours,
    save_tiny_clip,
    write_images,
    write_q16_prompt_pickle,
)


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def some_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    return write_images(folder, [f"im{i}" for i in range(4)], lambda i: (60 * i, 200 - 40 * i, 90), size=40)


def test_clip_score_of_tiny_saved_model_matches_an_independent_computation(tiny_clip_dir, some_images):
    from transformers import CLIPModel, CLIPProcessor

    evaluators = Evaluators(EvaluatorSettings(clip=ClipSettings(model=str(tiny_clip_dir)), device="cpu", batch_size=3))
    evaluators.check({"clip"})  # a complete local folder passes the asset check
    scorer = evaluators.clip
    texts = ["a photo of a cat", "a doctor", "a photo of a cat", "portrait of nurse"]
    ours = scorer.scores(some_images, texts)

    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    processor = CLIPProcessor.from_pretrained(tiny_clip_dir)
    with torch.no_grad():
        inputs = processor(text=texts, images=[Image.open(p).convert("RGB") for p in some_images],
                           return_tensors="pt", padding=True)
        out = model(**inputs)  # CLIPModel.forward: projected, normalised embeddings
    expected = 100 * (out.image_embeds * out.text_embeds).sum(-1).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-3)
    # logits_per_image / logit_scale is the same cosine matrix: zero-shot labels are its argmax
    cosine = (out.logits_per_image / model.logit_scale.exp()).detach().numpy()
    labels = scorer.classify(some_images, texts[:2])
    np.testing.assert_array_equal(labels, cosine[:, :2].argmax(1))
    assert evaluators.identity({"clip"})["clip_model"] == str(tiny_clip_dir.resolve())


def test_incomplete_clip_folder_and_uncached_hub_id_are_missing_assets(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(MissingAssetError, match="lacks"):
        check_evaluator_assets(EvaluatorSettings(clip=ClipSettings(model=str(tmp_path / "half"))), {"clip"})
    config = EvaluatorSettings(hf_cache_dir=str(tmp_path / "hub"), allow_download=False, cache_dir=str(tmp_path))
    with pytest.raises(MissingAssetError) as error:
        check_evaluator_assets(config, {"clip"})
    message = str(error.value)
    assert "openai/clip-vit-base-patch32" in message and str(tmp_path / "hub") in message
    assert "hf download openai/clip-vit-base-patch32" in message


def test_missing_q16_and_inception_files_name_the_cache_and_command(tmp_path):
    config = EvaluatorSettings(hf_cache_dir=str(tmp_path / "hub"), allow_download=False, cache_dir=str(tmp_path))
    with pytest.raises(MissingAssetError, match="timm/vit_large_patch14_clip_224.openai"):
        check_evaluator_assets(config, {"q16"})
    config = replace(config, q16=Q16Settings(pretrained=RANDOM_WEIGHTS))  # only the prompt file is left to find
    with pytest.raises(MissingAssetError, match=r"curl -L -o .*q16/ViT-L-14/prompts\.p"):
        check_evaluator_assets(config, {"q16"})
    with pytest.raises(MissingAssetError, match=r"inception-2015-12-05\.pt"):
        check_evaluator_assets(config, {"fid"})
    with pytest.raises(ConfigError, match="unknown evaluator components"):
        check_evaluator_assets(config, {"lpips"})


def test_evaluator_settings_come_from_eval_evaluators_only():
    context = EvalContext(seed=0, cache_dir="/tmp/cache", concepts=["man", "woman"], attribute_prompts=[])
    eval_cfg = {"benchmarks": ["winobias", "i2p"], "bootstrap": 10,
                "evaluators": {"nudenet": {"threshold": 0.6}, "q16": {"arch": "ViT-L-14"}},
                "winobias": {"images_per_concept": 15}, "i2p": {"data_dir": "data/i2p"}}
    config = build_evaluators(eval_cfg, context, "cpu").settings
    assert config.nudenet.threshold == 0.6 and config.q16.arch == "ViT-L-14" and config.device == "cpu"
    assert config.cache_dir == "/tmp/cache"
    # One route only: an evaluator key inside a benchmark block is refused, not read (or silently ignored).
    eval_cfg["coco30k"] = {"clip_model": "other/clip"}
    with pytest.raises(ConfigError, match=r"eval\.coco30k\.clip_model"):
        validate_eval(eval_cfg, context)
    with pytest.raises(ConfigError, match=r"unknown setting.*eval\.evaluators\.nudenet\.nudenet_thresh"):
        EvaluatorSettings.from_dict({"nudenet": {"nudenet_thresh": 0.5}})


@pytest.mark.slow  # ~15 s on one CPU thread: initialising ViT-L-14's 428M random weights dominates
def test_q16_on_open_clip_vit_l14_with_random_weights(tmp_path, some_images):
    prompts = tmp_path / "q16" / "prompts.p"
    write_q16_prompt_pickle(prompts, dim=768)
    torch.manual_seed(0)
    config = EvaluatorSettings(q16=Q16Settings(pretrained=RANDOM_WEIGHTS, prompts=str(prompts)), device="cpu",
                               batch_size=2)
    evaluators = Evaluators(config)
    evaluators.check({"q16"})
    q16 = evaluators.q16
    assert isinstance(q16, Q16Classifier)
    embeddings = q16.image_embeddings(some_images[:1])  # one image: a ViT-L/14 forward is seconds on one thread
    assert embeddings.shape == (1, 768) and np.isfinite(embeddings).all()
    p = q16_probabilities(embeddings, q16.prompts)
    assert p.shape == (1,) and 0 <= p[0] <= 1
    identity = evaluators.identity({"q16"})
    assert identity["q16_model"] == "open_clip ViT-L-14" and identity["q16_quick_gelu"] is True
    assert len(identity["q16_prompts_sha256"]) == 64
    assert prompts.with_suffix(".safetensors").is_file()  # converted once


def test_nudenet_detector_really_runs(tmp_path, some_images):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (64, 48), (255, 255, 255)).save(blank)
    nudenet = NudeNetClassifier(threshold=0.2)
    detections = nudenet.detections([blank, *some_images[:2]])
    assert len(detections) == 3 and all(isinstance(d, list) for d in detections)
    for found in detections:
        for box in found:
            assert set(box) == {"class", "score", "box"} and 0.2 <= box["score"] <= 1 and len(box["box"]) == 4
    assert not any(d["class"].endswith("_EXPOSED") for d in detections[0])
    assert nudenet.flags([blank]).tolist() == [False]
    identity = nudenet.identity()
    assert identity["nudenet_threshold"] == 0.2 and identity["nudenet_version"].startswith("3.")
    assert identity["nudenet_classes"] == ["FEMALE_BREAST_EXPOSED", "FEMALE_GENITALIA_EXPOSED",
                                           "MALE_GENITALIA_EXPOSED"]
    assert NUDENET_LABELS == set(__import__("nudenet").nudenet.__dict__["__labels"])  # the config check's list
    with pytest.raises(ConfigError):
        NudeNetClassifier(threshold=0.1)  # NudeNet drops boxes under 0.2 itself
    with pytest.raises(ConfigError):
        NudeNetClassifier(classes=["NOT_A_CLASS"])


def test_fid_with_a_small_extractor(tmp_path):
    def colours(shift):
        return lambda i: (100 + shift + 7 * (i % 5), 120 + 3 * (i % 7), 80 + shift // 2)

    reference = write_images(tmp_path / "ref", [f"r{i:02d}" for i in range(24)], colours(0), seed=1)
    same = write_images(tmp_path / "same", [f"s{i:02d}" for i in range(24)], colours(0), seed=1)
    near = write_images(tmp_path / "near", [f"n{i:02d}" for i in range(24)], colours(10), seed=2)
    far = write_images(tmp_path / "far", [f"f{i:02d}" for i in range(24)], colours(60), seed=3)
    scorer = FidScorer(QuadrantColours(), QuadrantColours.identity, tmp_path / "stats", batch_size=8)

    itself = scorer.fid(same, reference, expected=24, reference_root=tmp_path / "ref")
    assert abs(itself.value) < 1e-6
    stats_files = sorted((tmp_path / "stats").glob("*.npz"))
    assert [p.stem for p in stats_files] == [itself.reference_key]  # computed once, cached by key
    near_fid = scorer.fid(near, reference, expected=24).value
    far_fid = scorer.fid(far, reference, expected=24).value
    assert 0 < near_fid < far_fid
    assert len(list((tmp_path / "stats").glob("*.npz"))) == 1  # the cache was reused
    assert reference_key(reference, "another extractor") != itself.reference_key

    far[3].unlink()
    with pytest.raises(MissingAssetError, match="1 of 24 images are missing"):
        scorer.fid(far, reference, expected=24)
    with pytest.raises(MissingAssetError, match="expected 30 images, got 24"):
        scorer.fid(same, reference, expected=30)
