"""The toy world's evaluators, as the toy benchmarks (benchmarks/*_toy.py) use them.

On the toy world the paper's evaluators (CLIP, NudeNet, Q16, Inception) mean nothing, and they are not needed:
the world's exact pixel classifiers read kind, gender, race and blood (respodiff/toyworld/classifiers.py), and
FID-toy uses a small CNN the project trained on toy renders (respodiff/toyworld/fid_features.py). This module
loads a store's images for them and names them in every result (the evaluator identity).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np

from respodiff.evaluation.images import open_rgb
from respodiff.io import sha256_file

# Shown wherever an FID-toy number is, so nobody reads it as an Inception FID.
FID_TOY_NOTE = "FID-toy: features from a CNN trained by the project on toy renders"


def load_images(paths: Sequence[str | os.PathLike]) -> np.ndarray:
    """(N, H, W, 3) uint8 from image files, in the order given (callers keep ids aligned with `paths`)."""
    if not len(paths):
        return np.zeros((0, 32, 32, 3), np.uint8)
    return np.stack([np.asarray(open_rgb(p), dtype=np.uint8) for p in paths])


@lru_cache(maxsize=1)
def _fid_weights_hash() -> str:
    from respodiff.toyworld.fid_features import DEFAULT_DIR

    path = DEFAULT_DIR / "model.safetensors"
    return sha256_file(path)[:16] if path.is_file() else "missing"


def toy_identity(*, fid: bool = False) -> dict:
    """Who scored a toy benchmark: the exact classifiers' version (+ the FID-toy network and its weights)."""
    from respodiff.toyworld import classifiers

    identity = {"scale": "toy", "classifiers": classifiers.VERSION,
                "classifier_note": "exact toy-world pixel classifiers (kind, gender, race, blood)"}
    if fid:
        from respodiff.toyworld import fid_features

        identity.update({"fid_features": fid_features.VERSION, "fid_features_sha256": _fid_weights_hash(),
                         "fid_note": FID_TOY_NOTE})
    return identity


def check_toy_evaluators(*, fid: bool = False) -> None:
    """Fail before generation when FID-toy's committed weights are missing (the classifiers need no files)."""
    if fid:
        from respodiff.toyworld.fid_features import load_feature_net

        load_feature_net()  # raises MissingAssetError naming the command that trains it


class ToyScored:
    """Mixin (before the Benchmark class) for benchmarks scored by the toy world's exact classifiers.

    They need none of the evaluation models (`requires` is empty), so their asset check and identity are the toy
    scorers' instead: the classifiers' version and, with `uses_fid_toy`, the FID-toy network and its weights.
    """

    requires: ClassVar[frozenset[str]] = frozenset()
    uses_fid_toy: ClassVar[bool] = False

    def check_evaluators(self, settings: dict | None) -> None:
        check_toy_evaluators(fid=self.uses_fid_toy)

    def scorer_identity(self, evaluators: Any) -> dict:
        return toy_identity(fid=self.uses_fid_toy)
