"""Image quality: CLIP score and FID (clean-fid, clean mode) with cached reference statistics.

FID uses clean-fid's own resizing ("clean": PIL bicubic to 299 x 299 in float) and its Frechet distance; the
feature extractor is pluggable so tests and the toy world can run it with a small network. Reference statistics
are cached under a key that hashes the reference file list, the extractor identity, the mode and the image format,
so statistics of one extractor, subset or format are never reused for another.

Image format (eval.image_format): generated images are read as they were saved. With `jpeg75` the reference images
are re-encoded in memory as JPEG quality 75 (Pillow) before feature extraction, so both sides of the distance carry
the same compression, as the public scripts' JPEG references did; with `png` they are read as they are.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from respodiff.errors import ConfigError, MissingAssetError
from respodiff.evaluation.registry import Metric
from respodiff.io import replace_atomically, write_json_atomically

log = logging.getLogger(__name__)

CLIP_SCORE = Metric(
    name="clip_score",
    version="1",
    higher_is_better=True,
    description="100 x cosine between CLIP image and text embeddings, mean over images",
)
FID = Metric(
    name="fid",
    version="1",
    higher_is_better=False,
    description="Frechet distance of generated vs reference image features (clean-fid, clean mode)",
)
FID_MODE = "clean"
_STATS_FORMAT = "respodiff.fid_stats/1"
# eval.image_format -> the JPEG quality references are re-encoded with (None: read as they are). The generation
# side of the same choice is respodiff/generation/plan.py IMAGE_FORMATS and store.py JPEG_QUALITY (a test ties them).
REFERENCE_REENCODING: dict[str, int | None] = {"png": None, "jpeg75": 75}
# The suffix a store's images have in each format (plan.IMAGE_FORMATS, inverted; a test ties them too).
FORMAT_OF_SUFFIX = {".png": "png", ".jpg": "jpeg75"}


def clip_scores(image_embeddings: np.ndarray, text_embeddings: np.ndarray) -> np.ndarray:
    """100 x cosine of paired rows (image i with text i). Not clipped at 0: the paper reports the raw scale."""
    images = np.asarray(image_embeddings, dtype=np.float64)
    texts = np.asarray(text_embeddings, dtype=np.float64)
    if images.shape != texts.shape:
        raise ValueError(f"image embeddings {images.shape} and text embeddings {texts.shape} must pair row by row")
    images = images / np.linalg.norm(images, axis=1, keepdims=True)
    texts = texts / np.linalg.norm(texts, axis=1, keepdims=True)
    return 100.0 * (images * texts).sum(axis=1)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"FID needs at least two feature rows, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    from cleanfid.fid import frechet_distance as _cleanfid_frechet
    from scipy.linalg import LinAlgWarning

    # Feature dimensions that never vary over a set (dead ReLU units of the toy CNN, fewer images than dimensions)
    # make a covariance singular; scipy's sqrtm warns although the square root, and so the distance, is defined.
    # One log line says so instead of the library's warning on the console at every FID.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(_cleanfid_frechet(mu1, sigma1, mu2, sigma2))
    for warning in caught:
        if issubclass(warning.category, LinAlgWarning):
            log.info("FID: singular covariance product (%d feature dimensions); the distance is still defined",
                     len(mu1))
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return value


def jpeg_reencoded(image: np.ndarray, quality: int) -> np.ndarray:
    """An RGB uint8 image (H, W, 3) after a round trip through Pillow's JPEG encoder at `quality`: what saving a
    decoded image as "<i>.jpg" and reading it back does to it."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


def reference_transform(image_format: str) -> Callable[[np.ndarray], np.ndarray] | None:
    """What clean-fid applies to each reference image before resizing (None: nothing). A partial of a module-level
    function, so clean-fid's data-loader workers can pickle it."""
    if image_format not in REFERENCE_REENCODING:
        raise ConfigError(f"image format {image_format!r} is not one of {tuple(REFERENCE_REENCODING)}")
    quality = REFERENCE_REENCODING[image_format]
    return None if quality is None else functools.partial(jpeg_reencoded, quality=quality)


def image_format_of(paths: Sequence[str | os.PathLike]) -> str:
    """The image format of a store's images, read off their suffixes (the manifest's paths say how they were
    saved); a store mixing formats is refused rather than compared half one way."""
    suffixes = sorted({Path(p).suffix.lower() for p in paths})
    unknown = [s for s in suffixes if s not in FORMAT_OF_SUFFIX]
    if unknown or len(suffixes) != 1:
        raise ConfigError(f"generated images must all be in one format of {sorted(FORMAT_OF_SUFFIX)} to compute FID, "
                          f"found suffixes {suffixes}")
    return FORMAT_OF_SUFFIX[suffixes[0]]


def require_all_exist(paths: Sequence[str | os.PathLike], expected: int | None, what: str) -> None:
    """Refuse a partial image set: count first, then check every file."""
    if expected is not None and len(paths) != expected:
        raise MissingAssetError(f"{what}: expected {expected} images, got {len(paths)}; refusing to compute FID")
    missing = [str(p) for p in paths if not os.path.isfile(p)]
    if missing:
        raise MissingAssetError(
            f"{what}: {len(missing)} of {len(paths)} images are missing (e.g. {missing[:3]}); refusing to compute FID"
        )


def reference_key(
    paths: Sequence[str | os.PathLike], extractor_id: str, mode: str = FID_MODE, root: str | os.PathLike | None = None,
    image_format: str = "png",
) -> str:
    """sha256 over (mode, extractor, image format, sorted relative file names with sizes): cheap, and moves with the
    folder. The format is in it so png and jpeg75 statistics of one folder never stand in for each other."""
    root = Path(root) if root is not None else Path(os.path.commonpath([os.path.abspath(p) for p in paths]))
    if root.is_file():
        root = root.parent
    entries = sorted(
        (os.path.relpath(os.path.abspath(p), os.path.abspath(root)), os.path.getsize(p)) for p in paths
    )
    digest = hashlib.sha256()
    digest.update(json.dumps({"mode": mode, "extractor": extractor_id, "image_format": image_format},
                             sort_keys=True).encode())
    for name, size in entries:
        digest.update(f"{name}\t{size}\n".encode())
    return digest.hexdigest()


@dataclass
class FidResult:
    value: float
    n_generated: int
    n_reference: int
    reference_key: str
    reference_format: str = "png"


class FidScorer:
    """FID with clean-fid's clean-mode preprocessing and any feature extractor.

    `extractor` maps a float batch (B, 3, 299, 299) in [0, 255] to features (B, D), as clean-fid's Inception does.
    `extractor_id` names it in cache keys and results (e.g. "clean-fid inception-2015-12-05 sha256:...").
    """

    def __init__(
        self,
        extractor: Callable,
        extractor_id: str,
        stats_dir: str | os.PathLike,
        *,
        mode: str = FID_MODE,
        device: str = "cpu",
        batch_size: int = 32,
        num_workers: int = 0,
    ) -> None:
        if mode != FID_MODE:
            raise ValueError(f"only clean-fid's {FID_MODE!r} mode is supported, got {mode!r}")
        self.extractor = extractor
        self.extractor_id = extractor_id
        self.stats_dir = Path(stats_dir)
        self.mode = mode
        self.device = device
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.last_reference_key: str | None = None
        self.last_reference_format: str | None = None

    def identity(self) -> dict:
        return {"fid_mode": self.mode, "fid_features": self.extractor_id, "fid_reference_stats": self.last_reference_key,
                "fid_reference_format": self.last_reference_format}

    def features(self, paths: Sequence[str | os.PathLike], image_format: str = "png") -> np.ndarray:
        """Features of the image files, each re-encoded first as `image_format` says (reference_transform)."""
        import torch
        from cleanfid.fid import get_files_features

        return get_files_features(
            [str(p) for p in paths],
            model=self.extractor,
            num_workers=self.num_workers,
            batch_size=self.batch_size,
            device=torch.device(self.device),
            mode=self.mode,
            verbose=False,
            custom_image_tranform=reference_transform(image_format),  # clean-fid's spelling
        )

    def reference_statistics(
        self, paths: Sequence[str | os.PathLike], root: str | os.PathLike | None = None, image_format: str = "png"
    ) -> tuple[np.ndarray, np.ndarray, str]:
        """(mu, sigma, key) of the reference images in `image_format`, computed once per key and cached as npz."""
        key = reference_key(paths, self.extractor_id, self.mode, root, image_format)
        target = self.stats_dir / f"{key}.npz"
        if target.is_file():
            with np.load(target) as stats:
                return stats["mu"], stats["sigma"], key
        mu, sigma = feature_statistics(self.features(paths, image_format))
        # Atomic: a crash never leaves half a statistics file under the final name.
        replace_atomically(target, lambda handle: np.savez(handle, mu=mu, sigma=sigma))
        meta = {"format": _STATS_FORMAT, "key": key, "mode": self.mode, "extractor": self.extractor_id,
                "image_format": image_format, "n": len(paths), "root": str(root) if root is not None else None}
        write_json_atomically(target.with_suffix(".json"), meta)
        return mu, sigma, key

    def fid(
        self,
        generated: Sequence[str | os.PathLike],
        reference: Sequence[str | os.PathLike],
        *,
        expected: int | None = None,
        reference_root: str | os.PathLike | None = None,
        reference_format: str = "png",
    ) -> FidResult:
        """FID of `generated` (read as saved) against `reference` in `reference_format` (the run's
        eval.image_format: jpeg75 re-encodes the references); refuses unless every expected image exists."""
        reference_transform(reference_format)  # an unknown format is refused before any file is read
        require_all_exist(generated, expected, "generated images")
        require_all_exist(reference, None, "reference images")
        mu_ref, sigma_ref, key = self.reference_statistics(reference, reference_root, reference_format)
        self.last_reference_key, self.last_reference_format = key, reference_format
        mu_gen, sigma_gen = feature_statistics(self.features(generated))
        value = frechet_distance(mu_gen, sigma_gen, mu_ref, sigma_ref)
        return FidResult(value=value, n_generated=len(generated), n_reference=len(reference), reference_key=key,
                         reference_format=reference_format)
