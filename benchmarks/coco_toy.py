"""COCO-toy: captions drawn from the toy world's safe caption distribution, one image each, FID-toy + agreement.

FID-toy: features from a CNN trained by the project on toy renders (respodiff/toyworld/fid_features.py), not
Inception; the reference set is the world's own render of each caption's scene (the "real photo" of the caption),
so the reference distribution carries the planted biases, as COCO's photos carry the real world's. Lower is better.
Agreement: the caption-agreement score (0..100, CLIP-score analogue) of each image with its caption. Unlike
coco30k the size is a setting (default 500 of the 1,000 captions): FID-toy values are comparable only at one size,
so the size is recorded with every result.
Leakage: the per-image store keeps what the exact classifiers read (kind, gender, race) with the caption's facts
(names_gender, names_race, and subject: the kind it names, else "person"), so `python -m respodiff.evaluation compare`
measures how far a module moves gender and race on captions that leave them open (respodiff/evaluation/leakage.py).
"""

from __future__ import annotations

from typing import Any, ClassVar

import pandas as pd

from respodiff.errors import ConfigError
from respodiff.evaluation.images import join_many_to_one, require_complete
from respodiff.evaluation.leakage import SUBJECT
from respodiff.evaluation.quality import feature_statistics, frechet_distance
from respodiff.evaluation.registry import Benchmark, BenchmarkResult, Metric, metric_value, register_benchmark
from respodiff.evaluation.toy import FID_TOY_NOTE, ToyScored, load_images
from respodiff.toyworld import COCO_TOY_SIZE, GENDERS, RACES, coco_toy_references, coco_toy_table
from respodiff.toyworld.classifiers import agreement_score, classify, parse_caption

FID_TOY = Metric("fid_toy", "1", False, FID_TOY_NOTE + "; Frechet distance to the captions' reference renders")
FID_TOY_MATCHED = Metric("fid_toy_matched", "1", False, FID_TOY_NOTE + "; Frechet distance to references re-rendered "
                         "from each caption's scene with the kind, gender, race and blood the exact classifiers read "
                         "in the generated image: a changed attribute costs nothing, only how the image is drawn")
AGREEMENT = Metric("agreement", "1", True, "caption-agreement score (0..100, CLIP-score analogue) with the caption")


@register_benchmark
class CocoToy(ToyScored, Benchmark):
    name: ClassVar[str] = "coco_toy"
    metrics: ClassVar[tuple[Metric, ...]] = (FID_TOY, FID_TOY_MATCHED, AGREEMENT)
    uses_fid_toy: ClassVar[bool] = True  # exact classifiers + the committed FID-toy network
    setting_defaults: ClassVar[dict[str, Any]] = {"size": 500}
    leakage_attributes: ClassVar[dict[str, tuple[str, ...]]] = {"gender": tuple(GENDERS), "race": tuple(RACES)}

    def options(self, settings: dict | None) -> dict[str, Any]:
        s = super().options(settings)
        # The feature covariance (128 x 128) needs clearly more images than dimensions to be estimated at all.
        if not 200 <= self.integer(s, "size") <= COCO_TOY_SIZE:
            raise ConfigError(f"{self.key('size')} must lie in [200, {COCO_TOY_SIZE}], got {s['size']}")
        return s

    def captions(self, settings: dict) -> pd.DataFrame:
        return coco_toy_table(self.options(settings)["size"])

    def prompt_table(self, settings: dict) -> pd.DataFrame:
        table = self.captions(settings)
        return pd.DataFrame({"prompt_id": table["caption_id"], "prompt": table["caption"],
                             "caption_type": table["caption_type"]})

    def samples_per_prompt(self, settings: dict, n_concepts: int) -> int:
        return 1

    def evaluate(self, images: pd.DataFrame, settings: dict, evaluators: Any = None) -> BenchmarkResult:
        from respodiff.toyworld.fid_features import toy_fid_features

        s = self.options(settings)
        captions = self.captions(settings)
        images = require_complete(images, captions["caption_id"], benchmark=self.name, per_prompt=1)
        frame = join_many_to_one(images[["image_id", "prompt_id", "path"]],
                                 captions.rename(columns={"caption_id": "prompt_id"}), "prompt_id",
                                 f"{self.name} images vs captions")
        pixels = load_images(frame["path"].tolist())
        mu_gen, sigma_gen = feature_statistics(toy_fid_features(pixels))
        mu_ref, sigma_ref = feature_statistics(toy_fid_features(coco_toy_references(captions)))
        fid = frechet_distance(mu_gen, sigma_gen, mu_ref, sigma_ref)
        pred = classify(pixels)
        frame["agreement"] = agreement_score(pixels, frame["caption"].tolist(), pred)
        for column, values in self.leakage_columns(pred, frame["caption"].tolist()).items():
            frame[column] = values
        # frame's kind, gender, race and unsafe now hold what the classifiers read, beside each caption's render seed:
        # the same references, re-rendered with the generated image's attributes.
        mu_match, sigma_match = feature_statistics(toy_fid_features(coco_toy_references(frame)))
        fid_matched = frechet_distance(mu_gen, sigma_gen, mu_match, sigma_match)
        rows = [metric_value(FID_TOY, fid, n=len(frame)), metric_value(FID_TOY_MATCHED, fid_matched, n=len(frame)),
                *self.mean_rows(AGREEMENT, frame["agreement"], n_bootstrap=s["n_bootstrap"],
                                seed=s["bootstrap_seed"], stream=(self.name,))]
        identity = self.identity(evaluators, s["n_bootstrap"],
                                 fid_reference=f"toy renders of the first {s['size']} COCO-toy captions' scenes",
                                 size=s["size"])
        per_image = frame[["image_id", "prompt_id", "caption_type", "agreement", "kind", "gender", "race",
                           "names_gender", "names_race", SUBJECT]].reset_index(drop=True)
        return BenchmarkResult(per_image=per_image, metrics=rows, evaluator=identity)

    @staticmethod
    def leakage_columns(pred: pd.DataFrame, captions: list[str]) -> dict[str, Any]:
        """What the exact classifiers read from each image (`pred`, classify's frame), and what its caption names
        (leakage.py)."""
        named = [parse_caption(caption) for caption in captions]
        return {"kind": pred["kind"].to_numpy(), "gender": pred["gender"].to_numpy(), "race": pred["race"].to_numpy(),
                "unsafe": pred["unsafe"].to_numpy(),
                "names_gender": [("gender" in n) for n in named], "names_race": [("race" in n) for n in named],
                SUBJECT: [n.get("kind", "person") for n in named]}
