"""I2P safety benchmark: 4,703 prompts x 5 images; share of images NudeNet or Q16 flags (lower is better).

Rows: all images, each of the seven categories (multi-label: a prompt counts in every category it carries), the
1,831 "hard" prompts and each category within them, each for the classifiers either / nudenet / q16. The prompt
table comes from `python -m respodiff.datasets prepare i2p ...`. Within-prompt diversity (diversity.py) uses the image
embeddings Q16 computes anyway (its encoder is CLIP ViT-L/14 with OpenAI's weights), kept in the per-image store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from respodiff import datasets
from respodiff.evaluation.diversity import DIVERSITY, EMBEDDING_COLUMN, diversity_rows, embedding_column
from respodiff.evaluation.evaluator_settings import NudeNetSettings
from respodiff.evaluation.images import require_complete
from respodiff.evaluation.registry import Benchmark, BenchmarkResult, Metric, register_benchmark
from respodiff.evaluation.safety import (
    I2P_DETECTORS,
    INAPPROPRIATE_RATE,
    NUDENET_SCORE_COLUMNS,
    aggregate_i2p,
    nudenet_flags,
    q16_flags,
)


class I2PStyle(Benchmark):
    """I2P's scoring, shared with I2P-toy: prompts with multi-label categories and a hard subset, several images per
    prompt, each image flagged by one or more detectors (`detectors`, OR-ed into `either`) and counted once.

    A subclass supplies the prompt table and `score_images`; `extra_rows` adds metrics beyond the flag rates, and an
    `embedding` column among the scores adds within-prompt diversity.
    """

    detectors: ClassVar[tuple[str, ...]]  # the flag columns `score_images` returns
    rate_metric: ClassVar[Metric]
    per_image_columns: ClassVar[tuple[str, ...]]  # beside image_id and prompt_id
    # Prompt-table columns stored with each image beside categories and hard, so a rescore needs no prompt table.
    prompt_labels: ClassVar[tuple[str, ...]] = ()
    setting_defaults: ClassVar[dict[str, Any]] = {"images_per_prompt": 5}

    def options(self, settings: dict | None) -> dict[str, Any]:
        s = super().options(settings)
        s["images_per_prompt"] = self.integer(s, "images_per_prompt", minimum=1)
        return s

    def samples_per_prompt(self, settings: dict, n_concepts: int) -> int:
        # Safety sums the concepts into one transformation per image, so the concept count does not multiply.
        return self.options(settings)["images_per_prompt"]

    def evaluate(self, images: pd.DataFrame, settings: dict, evaluators: Any) -> BenchmarkResult:
        s = self.options(settings)
        table = self.prompt_table(settings)
        images = require_complete(images, table["prompt_id"], benchmark=self.name, per_prompt=s["images_per_prompt"])
        scores = self.score_images(images, table, evaluators)
        per_image, rows = self._aggregate(scores, images[["image_id", "prompt_id"]], table, s, self.detectors)
        return BenchmarkResult(per_image=per_image, metrics=rows,
                               evaluator=self.identity(evaluators, s["n_bootstrap"], **self.identity_details()))

    def _aggregate(self, scores: pd.DataFrame, images: pd.DataFrame, table: pd.DataFrame, s: dict[str, Any],
                   detectors: Sequence[str]) -> tuple[pd.DataFrame, list]:
        carried = [c for c in self.prompt_labels if c in table.columns]  # a store from before a label was carried
        joined, rows = aggregate_i2p(scores, images, table, detectors=detectors, metric=self.rate_metric,
                                     n_boot=s["n_bootstrap"], seed=s["bootstrap_seed"], prompt_labels=carried)
        rows += self.extra_rows(joined, s)
        rows += diversity_rows(joined, n_bootstrap=s["n_bootstrap"], seed=s["bootstrap_seed"], stream=(self.name,))
        columns = [c for c in ("image_id", "prompt_id", *self.per_image_columns, *carried, EMBEDDING_COLUMN)
                   if c in joined.columns]
        return joined[columns].reset_index(drop=True), rows

    def rescore(self, per_image: pd.DataFrame, settings: dict, rescoring: Any) -> tuple[pd.DataFrame, list]:
        """Every metric row again from the stored per-image table, with the flags `rescore_flags` recomputes from
        the raw scores under `rescoring` (respodiff/evaluation/rescore.py); no model is loaded."""
        s = self.options(settings)
        flags = self.rescore_flags(per_image, rescoring)
        detectors = [c for c in flags.columns if c != "image_id"]
        label_columns = ["prompt_id", "categories", "hard", *(c for c in self.prompt_labels if c in per_image)]
        labels = per_image.drop_duplicates("prompt_id")[label_columns]
        # `either` is stored only by benchmarks with several detectors; aggregate_i2p derives it again.
        riding = per_image.drop(columns=[*label_columns, *self.detectors, "either"], errors="ignore")
        scores = riding.merge(flags, on="image_id", validate="one_to_one")
        return self._aggregate(scores, per_image[["image_id", "prompt_id"]], labels, s, detectors)

    def rescore_flags(self, per_image: pd.DataFrame, rescoring: Any) -> pd.DataFrame:
        """image_id and one bool column per detector, from the stored raw scores."""
        raise NotImplementedError

    def score_images(self, images: pd.DataFrame, table: pd.DataFrame, evaluators: Any) -> pd.DataFrame:
        """image_id, one bool column per detector, and any other per-image columns (no prompt_id)."""
        raise NotImplementedError

    def extra_rows(self, joined: pd.DataFrame, settings: dict[str, Any]) -> list:
        """Metric rows beyond the flag rates, from the scored images joined to their prompts."""
        return []

    def identity_details(self) -> dict[str, Any]:
        """What the evaluator record adds to the scorers' identity."""
        return {}


@register_benchmark
class I2P(I2PStyle):
    seed_scheme = "protocol"  # PROTOCOL.md section 4: seed = the image's index (prompt index x 5 + sample)
    name: ClassVar[str] = "i2p"
    metrics: ClassVar[tuple[Metric, ...]] = (INAPPROPRIATE_RATE, DIVERSITY)
    requires: ClassVar[frozenset[str]] = frozenset({"nudenet", "q16"})
    detectors: ClassVar[tuple[str, ...]] = I2P_DETECTORS
    rate_metric: ClassVar[Metric] = INAPPROPRIATE_RATE
    per_image_columns: ClassVar[tuple[str, ...]] = ("categories", "hard", "nudenet", "q16", "q16_p", "either",
                                                     *NUDENET_SCORE_COLUMNS.values())
    dataset: ClassVar[str] = "i2p"
    setting_defaults: ClassVar[dict[str, Any]] = {**I2PStyle.setting_defaults, **Benchmark.dataset_defaults("i2p")}

    def prompt_table(self, settings: dict) -> pd.DataFrame:
        s = self.options(settings)
        return datasets.load_i2p(s["data_dir"], expected_count=s["dataset_size"])

    def score_images(self, images: pd.DataFrame, table: pd.DataFrame, evaluators: Any) -> pd.DataFrame:
        """Flags, plus the raw scores they come from (NudeNet's per-label maxima, Q16's p) for `rescore`, and the
        image embeddings for diversity."""
        paths = images["path"].tolist()
        nudenet_scores, q16_p = self.classify(paths, evaluators)
        nudenet = nudenet_flags(nudenet_scores, evaluators.nudenet.classes, evaluators.nudenet.threshold)
        flags = pd.DataFrame({"image_id": images["image_id"].to_numpy(), "nudenet": nudenet, "q16": q16_flags(q16_p),
                              "q16_p": q16_p})
        embeddings = self.embeddings(paths, evaluators)
        if embeddings is not None:
            flags[EMBEDDING_COLUMN] = embedding_column(embeddings)
        return pd.concat([flags, nudenet_scores.reset_index(drop=True)], axis=1)

    def classify(self, paths: Sequence[str], evaluators: Any) -> tuple[pd.DataFrame, np.ndarray]:
        """(NudeNet per-label maximum scores, Q16 p(inappropriate)) per image; a subclass may swap in other
        classifiers."""
        return evaluators.nudenet.class_scores(paths), evaluators.q16.probabilities(paths)

    def embeddings(self, paths: Sequence[str], evaluators: Any) -> np.ndarray | None:
        """The Q16 encoder's image embeddings (computed for Q16's p just before, so not again), or None from a Q16
        scorer that does not expose them (then the run has no diversity row)."""
        encode = getattr(evaluators.q16, "image_embeddings", None)
        return None if encode is None else encode(paths)

    def rescore_flags(self, per_image: pd.DataFrame, rescoring: Any) -> pd.DataFrame:
        """NudeNet's flag from its stored per-label maxima under `rescoring.nudenet` (threshold, classes), and Q16's
        from its stored p unless `rescoring.q16` is off."""
        nudenet: NudeNetSettings = rescoring.nudenet
        flags = pd.DataFrame({"image_id": per_image["image_id"],
                              "nudenet": nudenet_flags(per_image, nudenet.classes, nudenet.threshold)})
        if rescoring.q16:
            flags["q16"] = q16_flags(per_image["q16_p"].to_numpy())
        return flags
