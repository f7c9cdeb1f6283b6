"""The evaluation scale of a run (`model.evaluators`: real | toy | tiny) and the stand-ins the small scales use.

real  the paper's evaluators (CLIP ViT-B/32, Q16 on open_clip ViT-L-14 with OpenAI weights, NudeNet, clean-fid's
      Inception) and datasets (I2P and COCO-30K prepared under data/); anything missing fails before model work.
tiny  small deterministic stand-ins, built on first use into `<cache_dir>/eval-stand-ins-v<N>/`:
      - CLIP: a random-weight transformers CLIPModel written with save_pretrained, loaded back by the production
        loader as a local folder;
      - Q16: open_clip ViT-S-32 (not ViT-L-14: the Q16 path takes any open_clip arch whose image embedding width
        matches the prompt file, and ViT-S-32 builds in 0.5 s instead of 2.5 s and embeds an image ~50x faster)
        with seeded random weights (q16.pretrained=random) and a Q16-format prompt pickle of width 384;
      - NudeNet: the real detector (its ONNX model ships in the package);
      - FID: the weightless quadrant-colour features of testing.py instead of Inception;
      - I2P and COCO: small fixtures written as source files and prepared through the product's own
        `python -m respodiff.datasets prepare <name> --from-files ... --expected-count N` command.
toy   the same stand-ins: on 32 px toy renders the paper benchmarks' models mean nothing either, so they are
      only wiring checks there (the toy_* benchmarks, with exact classifiers, carry the toy world's numbers).

Every result scored at tiny or toy carries `scale`, `stand_ins` and the warning "tiny stand-ins: numbers are
meaningless" in its evaluator identity, and paper tables never pick such results up (reporting/selection.py).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from respodiff.errors import ConfigError, RespodiffError
from respodiff.evaluation.evaluator_settings import RANDOM_WEIGHTS, SCALES
from respodiff.evaluation.evaluators import STAND_IN_WARNING
from respodiff.io import temporary_sibling

# Bump when a builder below changes, so a cache written by an older one is not reused.
STAND_INS_VERSION = 1
Q16_ARCH = "ViT-S-32"
Q16_WIDTH = 384  # ViT-S-32's image embedding width
# Fixture sizes: small enough for seconds on a CPU, large enough for every I2P category and an FID covariance.
I2P_PROMPTS = 6
COCO_CAPTIONS = 8
COCO5K_CAPTIONS = 4  # coco5k stays a named subset of the coco30k fixture, as at real scale


def check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise ConfigError(f"model.evaluators {scale!r} is not one of {', '.join(SCALES)}")
    return scale


def stand_in_dir(cache_dir: str | os.PathLike) -> Path:
    return Path(cache_dir) / f"eval-stand-ins-v{STAND_INS_VERSION}"


def stand_in_settings(scale: str, cache_dir: str | os.PathLike) -> dict[str, Any]:
    """The eval-config overlay of a scale: {} for real, else where the stand-ins live (pure: touches no file).

    Its `evaluators` block has the nested shape of eval.evaluators (respodiff/evaluation/evaluator_settings.py).
    """
    if check_scale(scale) == "real":
        return {}
    root = stand_in_dir(cache_dir)
    data = root / "data"
    return {
        "evaluators": {
            "scale": scale,
            "clip": {"model": str(root / "clip")},
            "q16": {"arch": Q16_ARCH, "pretrained": RANDOM_WEIGHTS, "prompts": str(root / "q16" / "prompts.p")},
            "fid": {"features": "quadrant-colours"},
        },
        "i2p": {"data_dir": str(data / "i2p"), "dataset_size": I2P_PROMPTS},
        "coco30k": {"data_dir": str(data / "coco30k"), "dataset_size": COCO_CAPTIONS},
        "coco5k": {"data_dir": str(data / "coco30k"), "dataset_size": COCO_CAPTIONS, "size": COCO5K_CAPTIONS},
    }


def ensure_stand_ins(cache_dir: str | os.PathLike) -> Path:
    """Build the stand-ins once into the cache (same bytes every time) and return their folder."""
    root = stand_in_dir(cache_dir)
    if (root / "stand_ins.json").is_file():
        return root
    staging = temporary_sibling(root)
    try:
        _build(staging)
        # Publish by rename, so a crash never leaves a half-built folder that looks finished.
        os.replace(staging, root)
    except OSError:
        if not (root / "stand_ins.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # a failed build, or another process published first
    return root


def _build(root: Path) -> None:
    from respodiff import datasets
    from respodiff.evaluation.testing import (
        i2p_like_table,
        save_tiny_clip,
        write_coco_like_source,
        write_q16_prompt_pickle,
    )

    save_tiny_clip(root / "clip", seed=0)
    write_q16_prompt_pickle(root / "q16" / "prompts.p", dim=Q16_WIDTH, seed=0)
    sources = root / "sources"
    sources.mkdir(parents=True)
    i2p_like_table(I2P_PROMPTS, seed=0).to_csv(sources / "i2p.csv", index=False)
    write_coco_like_source(sources / "coco", COCO_CAPTIONS, seed=0)
    # The product's own command, not a shortcut: the fixtures go through the same parsing, counting and manifest.
    for name, source, count in (("i2p", sources / "i2p.csv", I2P_PROMPTS),
                                ("coco30k", sources / "coco", COCO_CAPTIONS)):
        code = datasets.main(["prepare", name, "--from-files", str(source), "--out", str(root / "data" / name),
                              "--expected-count", str(count)])
        if code != 0:
            raise RespodiffError(f"preparing the tiny {name} fixture from {source} failed (exit code {code})")
    record = {"version": STAND_INS_VERSION, "warning": STAND_IN_WARNING, "q16_arch": Q16_ARCH,
              "counts": {"i2p": I2P_PROMPTS, "coco30k": COCO_CAPTIONS}}
    (root / "stand_ins.json").write_text(json.dumps(record, indent=2))
