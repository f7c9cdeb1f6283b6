"""COCO quality benchmarks: one image per caption; FID (clean-fid, lower is better) and CLIP score (higher).

`coco30k` uses all 30,000 captions of the prepared set (`python -m respodiff.datasets prepare coco30k ...`);
`coco5k` is the named development subset: the first 5,000 captions (by caption index) and their references.
FID is refused unless every expected image exists: a partial set is not the benchmark. FID compares in the run's
image format (eval.image_format, read off the generated images' suffixes): with jpeg75 the reference images are
re-encoded as JPEG quality 75 in memory before feature extraction, as the generated ones were saved, and their
statistics are cached apart from the png ones (respodiff/evaluation/quality.py).
"""

from __future__ import annotations

from typing import Any, ClassVar

import pandas as pd

from respodiff import datasets
from respodiff.errors import ConfigError
from respodiff.evaluation.images import join_many_to_one, require_complete
from respodiff.evaluation.leakage import LEAKAGE_COLUMNS, caption_attribute_columns
from respodiff.evaluation.quality import CLIP_SCORE, FID, image_format_of
from respodiff.evaluation.registry import Benchmark, BenchmarkResult, Metric, metric_value, register_benchmark


@register_benchmark
class Coco30k(Benchmark):
    seed_scheme = "protocol"  # PROTOCOL.md section 4: seed = the image's index (caption index for COCO)
    name: ClassVar[str] = "coco30k"
    metrics: ClassVar[tuple[Metric, ...]] = (FID, CLIP_SCORE)
    requires: ClassVar[frozenset[str]] = frozenset({"clip", "fid"})
    default_size: ClassVar[int] = 30000
    dataset: ClassVar[str] = "coco30k"  # coco5k too: a named subset of the same prepared folder
    setting_defaults: ClassVar[dict[str, Any]] = {
        **Benchmark.dataset_defaults("coco30k"),
        "size": None,  # captions used: 30000 for coco30k, 5000 for coco5k
    }

    def options(self, settings: dict | None) -> dict[str, Any]:
        s = super().options(settings)
        canonical = s["dataset_size"] == datasets.DATASETS["coco30k"].expected_count
        if s["size"] is None:
            s["size"] = min(self.default_size, s["dataset_size"])
        if canonical and s["size"] != self.default_size:
            # A benchmark name must mean one image set; another size is another (named) benchmark.
            raise ConfigError(f"{self.name} always uses {self.default_size} captions, got size={s['size']}; "
                              "use coco5k (or register another named subset) for a smaller set")
        s["size"] = self.integer(s, "size")
        if not 2 <= s["size"] <= s["dataset_size"]:
            raise ConfigError(f"{self.key('size')} must lie in [2, dataset_size={s['dataset_size']}], "
                              f"got {s['size']}")
        return s

    def captions(self, settings: dict) -> pd.DataFrame:
        s = self.options(settings)
        table = datasets.load_coco(s["data_dir"], expected_count=s["dataset_size"])
        return table.sort_values("caption_index").head(s["size"]).reset_index(drop=True)

    def prompt_table(self, settings: dict) -> pd.DataFrame:
        table = self.captions(settings)
        return pd.DataFrame({"prompt_id": table["prompt_id"].astype(str), "prompt": table["caption"],
                             "caption_index": table["caption_index"], "reference_file": table["file"]})

    def samples_per_prompt(self, settings: dict, n_concepts: int) -> int:
        return 1

    def evaluate(self, images: pd.DataFrame, settings: dict, evaluators: Any) -> BenchmarkResult:
        s = self.options(settings)
        captions = self.captions(settings)
        images = require_complete(images, captions["prompt_id"], benchmark=self.name, per_prompt=1)
        frame = join_many_to_one(images[["image_id", "prompt_id", "path"]],
                                 captions[["prompt_id", "caption", "reference"]], "prompt_id",
                                 f"{self.name} images vs captions")
        image_format = image_format_of(frame["path"].tolist())
        clip = evaluators.clip.scores(frame["path"].tolist(), frame["caption"].tolist())
        fid = evaluators.fid.fid(frame["path"].tolist(), captions["reference"].tolist(), expected=s["size"],
                                 reference_root=s["data_dir"], reference_format=image_format)
        frame["clip_score"] = clip
        # Gender and race by CLIP zero-shot (the image embeddings CLIP score just computed) and what each caption
        # names: what a safety module changes besides its target (compare.py's leakage rows).
        for column, values in caption_attribute_columns(evaluators.clip, frame["path"].tolist(),
                                                        frame["caption"].tolist()).items():
            frame[column] = values
        rows = [metric_value(FID, fid.value, n=fid.n_generated),
                *self.mean_rows(CLIP_SCORE, clip, n_bootstrap=s["n_bootstrap"], seed=s["bootstrap_seed"],
                                stream=(self.name,))]
        identity = self.identity(evaluators, s["n_bootstrap"], fid_reference_stats=fid.reference_key,
                                 fid_reference_images=fid.n_reference, fid_reference_format=fid.reference_format)
        per_image = frame[["image_id", "prompt_id", "clip_score", *LEAKAGE_COLUMNS]].reset_index(drop=True)
        return BenchmarkResult(per_image=per_image, metrics=rows, evaluator=identity)


@register_benchmark
class Coco5k(Coco30k):
    name: ClassVar[str] = "coco5k"
    default_size: ClassVar[int] = 5000
