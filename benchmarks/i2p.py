"""I2P safety benchmark: 4,703 prompts x 5 images; share of images NudeNet or Q16 flags (lower is better).

Rows: all images, each of the seven categories (multi-label: a prompt counts in every category it carries), the
1,831 "hard" prompts and each category within them, each for the classifiers either / nudenet / q16. The prompt
table comes from `python -m respodiff.datasets prepare i2p ...`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from respodiff import datasets
from respodiff.errors import ConfigError
from respodiff.evaluation.evaluators import EvaluatorConfig, check_evaluator_assets
from respodiff.evaluation.images import require_complete
from respodiff.evaluation.registry import Benchmark, BenchmarkResult, Metric, register_benchmark
from respodiff.evaluation.safety import INAPPROPRIATE_RATE, aggregate_i2p, q16_flags
from respodiff.evaluation.settings import read_settings


@register_benchmark
class I2P(Benchmark):
    name: ClassVar[str] = "i2p"
    metrics: ClassVar[tuple[Metric, ...]] = (INAPPROPRIATE_RATE,)
    requires: ClassVar[frozenset[str]] = frozenset({"nudenet", "q16"})
    setting_defaults: ClassVar[dict[str, Any]] = {
        "data_dir": None,  # default data/i2p under $RESPODIFF_DATA
        "dataset_size": datasets.DATASETS["i2p"].expected_count,  # smaller only for a dev fixture
        "images_per_prompt": 5,
        "verify_checksums": False,  # True: rehash every dataset file before running
    }

    def options(self, settings: dict | None) -> dict[str, Any]:
        s = read_settings(settings, self.setting_defaults, self.name)
        if int(s["images_per_prompt"]) < 1:
            raise ConfigError(f"images_per_prompt must be >= 1, got {s['images_per_prompt']}")
        s["data_dir"] = s["data_dir"] or str(datasets.default_folder("i2p"))
        return s

    def check_assets(self, settings: dict) -> None:
        s = self.options(settings)
        datasets.verify("i2p", s["data_dir"], expected_count=int(s["dataset_size"]), full=bool(s["verify_checksums"]))
        check_evaluator_assets(EvaluatorConfig.from_settings(settings), self.requires)

    def prompt_table(self, settings: dict) -> pd.DataFrame:
        s = self.options(settings)
        return datasets.load_i2p(s["data_dir"], expected_count=int(s["dataset_size"]))

    def samples_per_prompt(self, settings: dict, n_concepts: int) -> int:
        # Safety sums the concepts into one transformation per image, so the concept count does not multiply.
        return int(self.options(settings)["images_per_prompt"])

    def evaluate(self, images: pd.DataFrame, settings: dict, evaluators: Any) -> BenchmarkResult:
        s = self.options(settings)
        table = self.prompt_table(settings)
        images = require_complete(images, table["prompt_id"], benchmark=self.name,
                                  per_prompt=int(s["images_per_prompt"]))
        paths = images["path"].tolist()
        nudenet, q16_p = self.classify(paths, evaluators)
        scores = pd.DataFrame({"image_id": images["image_id"].to_numpy(), "nudenet": nudenet,
                               "q16": q16_flags(q16_p), "q16_p": q16_p})
        joined, rows = aggregate_i2p(scores, images[["image_id", "prompt_id"]], table,
                                     n_boot=int(s["n_bootstrap"]), seed=int(s["bootstrap_seed"]))
        per_image = joined[["image_id", "prompt_id", "categories", "hard", "nudenet", "q16", "q16_p", "either"]]
        identity = evaluators.identity(self.requires) if hasattr(evaluators, "identity") else {}
        identity = {**identity, "bootstrap": int(s["n_bootstrap"]),
                    "metrics": {m.name: m.version for m in self.metrics}}
        return BenchmarkResult(per_image=per_image.reset_index(drop=True), metrics=rows, evaluator=identity)

    def classify(self, paths: Sequence[str], evaluators: Any) -> tuple[np.ndarray, np.ndarray]:
        """(NudeNet flags, Q16 p(inappropriate)) per image; a subclass may swap in other classifiers."""
        return evaluators.nudenet.flags(paths), evaluators.q16.probabilities(paths)
