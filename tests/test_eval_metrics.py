"""Pure metric functions: DevRat, bootstrap intervals, I2P aggregation, Q16's rule, the restricted unpickler."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pandas as pd
import pytest

from respodiff.evaluation.fairness import deviation_ratio, devrat_by_group, zero_shot_labels
from respodiff.evaluation.images import EvaluationDataError
from respodiff.evaluation.q16_prompts import UnsafePickleError, load_array_pickle, load_q16_prompts
from respodiff.evaluation.quality import clip_scores
from respodiff.evaluation.safety import aggregate_i2p, nudenet_flag, q16_flags, q16_probabilities
from respodiff.evaluation.stats import bootstrap_mean_ci, rng_for

# --- DevRat -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ([5, 5], 0.0),  # balanced
        ([4, 4, 4], 0.0),
        ([10, 0], 1.0),  # one class takes everything
        ([0, 0, 7], 1.0),
        ([3, 1], 0.5),  # shares .75/.25: |.75 - .5| / (1 - .5)
        ([6, 3, 1], 0.4),  # shares .6/.3/.1: |.6 - 1/3| / (2/3)
        ([2, 2, 0], 0.5),  # the empty class sets the maximum: |0 - 1/3| / (2/3)
    ],
)
def test_deviation_ratio_hand_cases(counts, expected):
    assert deviation_ratio(np.array(counts)) == pytest.approx(expected)


def test_deviation_ratio_vectorised_and_rejects_empty_groups():
    np.testing.assert_allclose(deviation_ratio(np.array([[5, 5], [10, 0], [3, 1]])), [0.0, 1.0, 0.5])
    with pytest.raises(ValueError):
        deviation_ratio(np.array([0, 0]))
    with pytest.raises(ValueError):
        deviation_ratio(np.array([3]))


def test_devrat_by_group_mean_over_groups_counts_absent_classes():
    # doctor: all class 0 (DevRat 1); nurse: balanced (0); class 1 never appears for doctors but still counts.
    labels = np.array([0] * 6 + [0, 1, 0, 1, 0, 1])
    groups = np.array(["doctor"] * 6 + ["nurse"] * 6)
    summary = devrat_by_group(labels, groups, n_classes=2)
    assert summary.groups == ["doctor", "nurse"]
    np.testing.assert_allclose(summary.per_group, [1.0, 0.0])
    assert summary.mean == pytest.approx(0.5)
    # Six images all of one class do not prove a DevRat of exactly 1 (the bootstrap said [1, 1]); the interval
    # reaches 1 and stays well above the balanced case.
    low, high = summary.per_group_ci[0]
    assert 0.0 < low < 1.0 and high == 1.0
    assert summary.per_group_ci[1][0] == 0.0  # a balanced group is consistent with DevRat 0
    low, high = summary.mean_ci
    assert low <= 0.5 + 1e-9 and high >= 0.5 and high <= 1.0
    again = devrat_by_group(labels, groups, n_classes=2)
    assert again.mean_ci == summary.mean_ci  # deterministic
    assert devrat_by_group(labels, groups, n_classes=2, intervals=False).mean_ci is None


def test_zero_shot_labels_is_cosine_argmax():
    classes = np.array([[1.0, 0.0], [0.0, 1.0]])
    images = np.array([[5.0, 1.0], [0.1, 3.0], [-1.0, -0.5]])
    np.testing.assert_array_equal(zero_shot_labels(images, classes), [0, 1, 1])


# --- bootstrap ------------------------------------------------------------------------------------------------


def test_bootstrap_mean_ci_is_seeded_and_brackets_the_mean():
    values = np.random.default_rng(0).normal(10.0, 2.0, size=400)
    mean, (low, high) = bootstrap_mean_ci(values, n_boot=500, rng=rng_for(0, "x"))
    assert low < mean < high
    assert high - low == pytest.approx(2 * 1.96 * 2.0 / np.sqrt(400), rel=0.25)
    assert bootstrap_mean_ci(values, n_boot=500, rng=rng_for(0, "x")) == (mean, (low, high))
    assert bootstrap_mean_ci(values, n_boot=0)[1] is None


def test_bootstrap_binary_values_match_the_binomial_width():
    values = np.array([1.0] * 30 + [0.0] * 70)
    _, (low, high) = bootstrap_mean_ci(values, n_boot=2000, rng=rng_for(1, "rate"))
    assert low == pytest.approx(0.3 - 1.96 * np.sqrt(0.21 / 100), abs=0.03)
    assert high == pytest.approx(0.3 + 1.96 * np.sqrt(0.21 / 100), abs=0.03)


# --- I2P aggregation -----------------------------------------------------------------------------------------


def _i2p_frames():
    prompts = pd.DataFrame({
        "prompt_id": ["p0", "p1", "p2"],
        "categories": ["sexual, violence", "hate", "violence"],
        "hard": [1, 0, 0],
    })
    images = pd.DataFrame({"image_id": [f"i2p/{p}/{k}" for p in ("p0", "p1", "p2") for k in range(2)],
                           "prompt_id": [p for p in ("p0", "p1", "p2") for _ in range(2)]})
    # Scores arrive in a different order than the manifest: the join must be by id.
    scores = pd.DataFrame({
        "image_id": ["i2p/p2/1", "i2p/p0/0", "i2p/p1/1", "i2p/p0/1", "i2p/p2/0", "i2p/p1/0"],
        "nudenet": [False, True, False, False, False, False],
        "q16": [True, False, False, True, False, False],
    })
    return scores, images, prompts


def test_i2p_overall_counts_each_multilabel_image_once():
    scores, images, prompts = _i2p_frames()
    joined, rows = aggregate_i2p(scores, images, prompts, n_boot=100)
    by_key = {(r["name"], tuple(sorted((r["group"] or {}).items()))): r for r in rows}
    overall = by_key[("inappropriate_rate", ())]
    # flagged: p0/0 (nudenet), p0/1 (q16), p2/1 (q16) -> 3 of 6 images; exploding labels would give 5 of 8
    assert overall["value"] == pytest.approx(3 / 6) and overall["n"] == 6
    assert by_key[("inappropriate_rate", (("classifier", "nudenet"),))]["value"] == pytest.approx(1 / 6)
    assert by_key[("inappropriate_rate", (("classifier", "q16"),))]["value"] == pytest.approx(2 / 6)
    violence = by_key[("inappropriate_rate", (("category", "violence"),))]
    assert violence["value"] == pytest.approx(3 / 4) and violence["n"] == 4  # p0 and p2
    assert by_key[("inappropriate_rate", (("category", "sexual"),))]["value"] == pytest.approx(1.0)
    assert by_key[("inappropriate_rate", (("category", "hate"),))]["value"] == 0.0
    hard = by_key[("inappropriate_rate", (("subset", "hard"),))]
    assert hard["value"] == 1.0 and hard["n"] == 2
    assert ("inappropriate_rate", (("category", "violence"), ("subset", "hard"))) in by_key
    assert set(joined["image_id"]) == set(images["image_id"]) and len(joined) == 6
    flagged = joined.set_index("image_id")["either"]
    assert flagged["i2p/p2/1"] and not flagged["i2p/p2/0"]
    for row in rows:
        assert row["version"] == "1" and row["higher_is_better"] is False
        assert row["ci_low"] <= row["value"] <= row["ci_high"]


def test_i2p_mismatched_image_id_raises():
    scores, images, prompts = _i2p_frames()
    scores.loc[0, "image_id"] = "i2p/p9/0"
    with pytest.raises(EvaluationDataError, match="do not match"):
        aggregate_i2p(scores, images, prompts, n_boot=0)
    scores, images, prompts = _i2p_frames()
    with pytest.raises(EvaluationDataError, match="duplicate"):
        aggregate_i2p(pd.concat([scores, scores.head(1)]), images, prompts, n_boot=0)
    images.loc[0, "prompt_id"] = "unknown"
    with pytest.raises(EvaluationDataError, match="without a match"):
        aggregate_i2p(scores, images, prompts, n_boot=0)


# --- classifier decision rules ---------------------------------------------------------------------------------


def test_q16_decision_rule_with_a_known_prompt_matrix():
    prompts = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # row 0 appropriate, row 1 inappropriate
    images = np.array([
        [1.0, 0.0, 0.0],  # equals the appropriate prompt
        [0.0, 2.0, 0.0],  # the inappropriate one
        [1.0, 1.0, 0.0],  # exactly between: p = 0.5, not flagged (argmax keeps class 0)
        [0.6, 0.8, 0.0],  # cosines 0.6 / 0.8: p = sigmoid(100 * 0.2)
    ])
    p = q16_probabilities(images, prompts)
    np.testing.assert_allclose(p[:3], [1 / (1 + np.exp(100.0)), 1 / (1 + np.exp(-100.0)), 0.5])
    assert p[3] == pytest.approx(1 / (1 + np.exp(-20.0)))
    np.testing.assert_array_equal(q16_flags(p), [False, True, False, True])
    # The same as softmax(100 * cosine)[1] computed the long way.
    logits = 100 * (images / np.linalg.norm(images, axis=1, keepdims=True)) @ prompts.T
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(p, (softmax / softmax.sum(1, keepdims=True))[:, 1])
    with pytest.raises(ValueError):
        q16_probabilities(images, np.ones((3, 3)))


def test_nudenet_flag_uses_classes_and_threshold():
    classes = ("FEMALE_BREAST_EXPOSED", "MALE_GENITALIA_EXPOSED")
    detections = [{"class": "FACE_FEMALE", "score": 0.9}, {"class": "FEMALE_BREAST_EXPOSED", "score": 0.3}]
    assert nudenet_flag(detections, classes, 0.2)
    assert not nudenet_flag(detections, classes, 0.6)
    assert nudenet_flag([{"class": "MALE_GENITALIA_EXPOSED", "score": 0.6}], classes, 0.6)  # >= threshold
    assert not nudenet_flag([], classes, 0.2)


def test_clip_scores_are_100_times_paired_cosine():
    images = np.array([[1.0, 0.0], [3.0, 4.0]])
    texts = np.array([[2.0, 0.0], [4.0, -3.0]])
    np.testing.assert_allclose(clip_scores(images, texts), [100.0, 0.0], atol=1e-9)


# --- Q16 prompt file ----------------------------------------------------------------------------------------------


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_rejects_code_and_reads_fp16_arrays(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(UnsafePickleError, match="posix.system|os.system|nt.system"):
        load_array_pickle(pickle.dumps(_Exploit(marker)))
    assert not marker.exists()
    with pytest.raises(UnsafePickleError):
        load_array_pickle(pickle.dumps({"not": "an array"}))
    array = np.random.default_rng(0).standard_normal((2, 768)).astype(np.float16)
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        loaded = load_array_pickle(pickle.dumps(array, protocol=protocol))
        assert loaded.dtype == np.float16 and loaded.shape == (2, 768)
        np.testing.assert_array_equal(loaded, array)


def test_q16_prompts_convert_once_to_safetensors_and_keep_the_hash(tmp_path):
    import hashlib

    from respodiff.evaluation.testing import write_q16_prompt_pickle

    source = tmp_path / "ViT-L-14" / "prompts.p"
    array = write_q16_prompt_pickle(source)
    expected_sha = hashlib.sha256(source.read_bytes()).hexdigest()
    loaded, sha = load_q16_prompts(source)
    np.testing.assert_array_equal(loaded, array)
    assert sha == expected_sha
    converted = source.with_suffix(".safetensors")
    assert converted.is_file()
    again, sha_again = load_q16_prompts(converted)  # safetensors alone carries the source hash
    np.testing.assert_array_equal(again, array)
    assert sha_again == expected_sha
    write_q16_prompt_pickle(source, seed=1)  # the pickle changed under the converted file
    with pytest.raises(Exception, match="different prompt file"):
        load_q16_prompts(source)


def test_fid_of_sets_with_constant_features_is_defined_and_logged_not_warned(caplog):
    import logging
    import warnings

    from scipy.linalg import LinAlgWarning

    from respodiff.evaluation.quality import feature_statistics, frechet_distance

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 8)), rng.normal(size=(50, 8))
    a[:, 0] = 0.0  # a unit that never fires on one set: its covariance is singular
    with warnings.catch_warnings(), caplog.at_level(logging.INFO, logger="respodiff.evaluation.quality"):
        warnings.simplefilter("error", LinAlgWarning)  # the library's warning must not reach the console
        value = frechet_distance(*feature_statistics(a), *feature_statistics(b))
    assert np.isfinite(value) and value > 0
    assert "singular covariance" in caplog.text
    assert frechet_distance(*feature_statistics(a), *feature_statistics(a)) == pytest.approx(0.0, abs=1e-6)
