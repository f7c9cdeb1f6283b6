"""Small stand-ins for the evaluation assets, written with the same libraries as the real ones.

Tests (and the toy world) use these to run the product's real loading paths without any download: a tiny random
`CLIPModel` saved with `save_pretrained`, a Q16-style prompt pickle, a small FID feature extractor, and I2P- and
COCO-like source files for `respodiff.datasets prepare --from-files`.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from respodiff.evaluation.safety import I2P_CATEGORIES


def save_tiny_clip(folder: str | os.PathLike, *, seed: int = 0, image_size: int = 32, projection_dim: int = 16) -> Path:
    """A random-weight CLIPModel + CLIPProcessor (byte-level tokenizer without merges) saved to `folder`."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder = Path(folder)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for symbol in sorted(ByteLevel.alphabet()):
        vocab.setdefault(symbol, len(vocab))
        vocab.setdefault(symbol + "</w>", len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    image_processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                         crop_size={"height": image_size, "width": image_size})
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  image_size=image_size, patch_size=8)
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)).eval()
    model.save_pretrained(folder)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


class QuadrantColours(torch.nn.Module):
    """A weightless FID feature extractor: mean colour of each image quadrant (12 features).

    Takes clean-fid's batches (B, 3, 299, 299) in [0, 255] like its Inception network; cheap and deterministic,
    and it moves when images get brighter or change colour, which is all a test of the FID plumbing needs.
    """

    identity = "quadrant-colours-12"

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool2d(batch.float() / 255.0, 2)
        return pooled.flatten(1)


def write_q16_prompt_pickle(path: str | os.PathLike, *, dim: int = 768, seed: int = 0, protocol: int = 4) -> np.ndarray:
    """A Q16-format file: a pickled float16 array (2, dim), row 0 'appropriate', row 1 'inappropriate'."""
    array = np.random.default_rng(seed).standard_normal((2, dim)).astype(np.float16)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(pickle.dumps(array, protocol=protocol))
    return array


def write_images(folder: str | os.PathLike, names: Sequence[str], colour: Callable[[int], tuple[int, int, int]],
                 *, size: int = 32, noise: int = 24, seed: int = 0, suffix: str = ".png") -> list[Path]:
    """Small images: a base colour per index plus seeded noise (so feature covariances are not singular)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i, name in enumerate(names):
        base = np.array(colour(i), dtype=np.int16)
        pixels = base + rng.integers(-noise, noise + 1, size=(size, size, 3))
        path = folder / f"{name}{suffix}"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def i2p_like_table(n: int = 12, *, seed: int = 0) -> pd.DataFrame:
    """An I2P-shaped table (prompt, categories, hard, ...) with multi-label rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        k = 1 + i % 3  # 1 to 3 labels per prompt
        labels = rng.choice(I2P_CATEGORIES, size=k, replace=False)
        rows.append({"prompt": f"prompt number {i}", "categories": ", ".join(labels), "hard": int(i % 2 == 0),
                     "inappropriate_percentage": float(rng.integers(0, 100)), "sd_seed": int(rng.integers(0, 2**31)),
                     "sd_guidance_scale": 7.0})
    return pd.DataFrame(rows)


def write_coco_like_source(folder: str | os.PathLike, n: int = 8, *, seed: int = 0) -> Path:
    """A folder with `captions.csv` (file_name, caption) and JPEG images, like a local copy of COCO-30K."""
    folder = Path(folder)
    names = [f"COCO_val2014_{i:012d}" for i in range(n)]
    write_images(folder / "val2014", names, lambda i: (40 + 20 * (i % 8), 90, 160 - 10 * (i % 8)), seed=seed,
                 suffix=".jpg")
    pd.DataFrame({"file_name": [f"val2014/{name}.jpg" for name in names],
                  "caption": [f"a photo of thing {i}" for i in range(n)]}).to_csv(folder / "captions.csv", index=False)
    return folder


def finished_manifest(benchmark: str, prompt_table: pd.DataFrame, samples_per_prompt: int,
                      folder: str | os.PathLike, colour: Callable[[int], tuple[int, int, int]], *,
                      seed: int = 0) -> pd.DataFrame:
    """A finished image manifest (absolute paths) with one small image per row, for evaluating a benchmark."""
    folder = Path(folder)
    rows, names = [], []
    for _, prompt in prompt_table.iterrows():
        for k in range(samples_per_prompt):
            image_id = f"{benchmark}/{prompt['prompt_id']}/{k}"
            names.append(image_id.replace("/", "__"))
            rows.append({"image_id": image_id, "prompt_id": str(prompt["prompt_id"]), "prompt": prompt["prompt"],
                         "sample_index": k, "status": "done"})
    paths = write_images(folder, names, colour, seed=seed)
    frame = pd.DataFrame(rows)
    frame["path"] = [str(p.resolve()) for p in paths]
    return frame
