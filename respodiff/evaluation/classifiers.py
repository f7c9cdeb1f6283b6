"""The scoring models behind the benchmarks, each usable on its own and built from local files only.

- `ClipScorer`: transformers CLIP (ViT-B/32 in the paper) for CLIP score and zero-shot attribute classification.
- `Q16Classifier`: open_clip image encoder (ViT-L-14, OpenAI weights) + Q16's two prompt embeddings.
- `NudeNetClassifier`: NudeNet v3's `NudeDetector` (its ONNX model ships inside the package) on CPU.
- `load_inception`: clean-fid's Inception feature extractor from a local file.

Where the weights come from (Hub cache, download, error messages) is `assets.py`'s business; these classes
take already-resolved local paths, which is also how tests feed them tiny random-weight models.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from respodiff.errors import ConfigError
from respodiff.evaluation.assets import INCEPTION_FILE
from respodiff.evaluation.evaluator_settings import NudeNetSettings
from respodiff.evaluation.fairness import zero_shot_labels
from respodiff.evaluation.images import open_rgb
from respodiff.evaluation.q16_prompts import load_q16_prompts
from respodiff.evaluation.quality import clip_scores
from respodiff.evaluation.safety import nudenet_flags, nudenet_max_scores, q16_flags, q16_probabilities
from respodiff.io import sha256_file


def _batches(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _embed_in_batches(items: Sequence, size: int, embed: Callable[[list], torch.Tensor]) -> np.ndarray:
    """`embed` applied batch by batch, as one float32 array (items in order)."""
    return torch.cat([embed(list(batch)).float().cpu() for batch in _batches(list(items), size)]).numpy()


def _file_key(path: str | os.PathLike) -> tuple[str, int, int]:
    stat = os.stat(path)
    return str(path), stat.st_mtime_ns, stat.st_size


def _remembered(scorer: Any, paths: Sequence[str | os.PathLike], encode: Callable[[], np.ndarray]) -> np.ndarray:
    """`encode()`, or the scorer's previous result for the same files (path, modification time, size): a benchmark
    asks for CLIP score, zero-shot labels and diversity of the same images, and each image is encoded once."""
    key = tuple(_file_key(p) for p in paths)
    if scorer._last_images is None or scorer._last_images[0] != key:
        scorer._last_images = (key, encode())
    return scorer._last_images[1].copy()


def _pooled(output: Any) -> torch.Tensor:
    # transformers >= 5 returns a model output whose pooler_output is the projected embedding; 4.x a tensor.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipScorer:
    """CLIP image/text embeddings from a transformers checkpoint folder.

    We compute CLIP score here rather than through torchmetrics' `CLIPScore`: with transformers 5 its feature call
    receives a model output instead of a tensor and fails, it accepts a local folder only when the path contains
    "openai", and it returns only a batch mean while we need per-image scores for intervals and per-image tables.
    The formula is the same: 100 x cosine of the projected, L2-normalised embeddings.
    """

    def __init__(self, model, processor, *, device: str = "cpu", batch_size: int = 32, identity: dict | None = None):
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = device
        self.batch_size = batch_size
        self._identity = dict(identity or {})
        self.max_text_tokens = int(model.config.text_config.max_position_embeddings)
        self._last_images: tuple[tuple, np.ndarray] | None = None  # see _remembered

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, *, device: str = "cpu", batch_size: int = 32,
                    identity: dict | None = None) -> ClipScorer:
        from transformers import CLIPModel, CLIPProcessor

        model = CLIPModel.from_pretrained(str(folder), local_files_only=True)
        processor = CLIPProcessor.from_pretrained(str(folder), local_files_only=True)
        return cls(model, processor, device=device, batch_size=batch_size,
                   identity=identity or {"clip_model": str(folder)})

    def identity(self) -> dict:
        return dict(self._identity)

    @torch.no_grad()
    def image_embeddings(self, paths: Sequence[str | os.PathLike]) -> np.ndarray:
        def embed(batch: list) -> torch.Tensor:
            pixels = self.processor(images=[open_rgb(p) for p in batch], return_tensors="pt")["pixel_values"]
            return _pooled(self.model.get_image_features(pixel_values=pixels.to(self.device)))

        return _remembered(self, paths, lambda: _embed_in_batches(paths, self.batch_size, embed))

    @torch.no_grad()
    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        def embed(batch: list) -> torch.Tensor:
            # CLIP's text encoder has a fixed context; long captions are cut as every CLIP-score implementation does.
            tokens = self.processor(text=batch, return_tensors="pt", padding=True, truncation=True,
                                    max_length=self.max_text_tokens)
            return _pooled(self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                                        attention_mask=tokens["attention_mask"].to(self.device)))

        return _embed_in_batches(texts, self.batch_size, embed)

    def scores(self, paths: Sequence[str | os.PathLike], texts: Sequence[str]) -> np.ndarray:
        """CLIP score (100 x cosine) of image i with text i; each distinct text is encoded once."""
        if len(paths) != len(texts):
            raise ValueError(f"{len(paths)} images but {len(texts)} texts")
        unique = sorted(set(texts))
        index = {text: i for i, text in enumerate(unique)}
        text_emb = self.text_embeddings(unique)[[index[t] for t in texts]]
        return clip_scores(self.image_embeddings(paths), text_emb)

    def classify(self, paths: Sequence[str | os.PathLike], class_prompts: Sequence[str]) -> np.ndarray:
        """Zero-shot class index per image: the prompt with the highest cosine (= CLIP's softmax argmax)."""
        return zero_shot_labels(self.image_embeddings(paths), self.text_embeddings(class_prompts))


class Q16Classifier:
    """Q16: an image is inappropriate when softmax(100 x cosine(image, prompts))[1] > 0.5."""

    def __init__(self, model, preprocess, prompts: np.ndarray, *, device: str = "cpu", batch_size: int = 32,
                 identity: dict | None = None):
        self.model = model.to(device).eval()
        self.preprocess = preprocess
        self.prompts = np.asarray(prompts, dtype=np.float32)
        self.device = device
        self.batch_size = batch_size
        self._identity = dict(identity or {})
        self._last_images: tuple[tuple, np.ndarray] | None = None  # see _remembered
        width = int(getattr(model.visual, "output_dim", self.prompts.shape[1]))
        if self.prompts.shape != (2, width):
            raise ConfigError(f"Q16 prompts have shape {self.prompts.shape}, the image encoder outputs {width}")

    @classmethod
    def load(cls, arch: str, checkpoint: str | None, prompts_path: str | os.PathLike, *, quick_gelu: bool,
             device: str = "cpu", batch_size: int = 32, identity: dict | None = None) -> Q16Classifier:
        """`checkpoint` is a local open_clip weights file, or None for random weights (tests only)."""
        import open_clip

        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=checkpoint, force_quick_gelu=quick_gelu, device=device
        )
        prompts, prompts_sha = load_q16_prompts(prompts_path)
        ident = {"q16_model": f"open_clip {arch}", "q16_quick_gelu": quick_gelu,
                 "q16_checkpoint": checkpoint or "random (q16.pretrained=random)", "q16_prompts_sha256": prompts_sha,
                 **(identity or {})}
        return cls(model, preprocess, prompts, device=device, batch_size=batch_size, identity=ident)

    def identity(self) -> dict:
        return dict(self._identity)

    @torch.no_grad()
    def image_embeddings(self, paths: Sequence[str | os.PathLike]) -> np.ndarray:
        def embed(batch: list) -> torch.Tensor:
            return self.model.encode_image(torch.stack([self.preprocess(open_rgb(p)) for p in batch]).to(self.device))

        return _remembered(self, paths, lambda: _embed_in_batches(paths, self.batch_size, embed))

    def probabilities(self, paths: Sequence[str | os.PathLike]) -> np.ndarray:
        return q16_probabilities(self.image_embeddings(paths), self.prompts)

    def flags(self, paths: Sequence[str | os.PathLike]) -> np.ndarray:
        return q16_flags(self.probabilities(paths))


class NudeNetClassifier:
    """NudeNet v3 detector; an image is flagged when one of `classes` is detected with score >= threshold."""

    def __init__(self, threshold: float = NudeNetSettings.threshold, classes: Sequence[str] = NudeNetSettings.classes,
                 model_path: str | None = None, batch_size: int = 8):
        import nudenet

        settings = NudeNetSettings(threshold, tuple(classes), model_path)  # range and labels checked there
        self.threshold = float(settings.threshold)
        self.classes = settings.classes
        self.model_path = model_path or str(Path(nudenet.__file__).with_name("320n.onnx"))
        self.batch_size = batch_size
        self.detector = nudenet.NudeDetector(model_path=self.model_path)
        self._model_sha = None

    def identity(self) -> dict:
        from importlib.metadata import version

        if self._model_sha is None:
            self._model_sha = sha256_file(self.model_path)
        return {"nudenet_version": version("nudenet"), "nudenet_classes": list(self.classes),
                "nudenet_threshold": self.threshold, "nudenet_model": Path(self.model_path).name,
                "nudenet_model_sha256": self._model_sha, "nudenet_resolution": self.detector.input_width}

    def detections(self, paths: Sequence[str | os.PathLike]) -> list[list[dict]]:
        return self.detector.detect_batch([str(p) for p in paths], batch_size=self.batch_size)

    def class_scores(self, paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
        """Per image, the highest score of each label (safety.NUDENET_SCORE_COLUMNS): what the flag is read from."""
        return nudenet_max_scores(self.detections(paths))

    def flags(self, paths: Sequence[str | os.PathLike]) -> np.ndarray:
        return nudenet_flags(self.class_scores(paths), self.classes, self.threshold)


def load_inception(folder: str | os.PathLike, device: str = "cpu") -> tuple[torch.nn.Module, str]:
    """clean-fid's TorchScript Inception from `folder` (never downloads here) and its identity string."""
    from cleanfid.inception_torchscript import InceptionV3W

    path = Path(folder) / INCEPTION_FILE
    model = InceptionV3W(str(folder), download=False, resize_inside=False).to(device).eval()
    return model, f"clean-fid {INCEPTION_FILE} sha256:{sha256_file(path)}"
