"""The paper's evaluator architectures at random weights, built from their configs (nothing is downloaded).

`python -m benchmarks.smoke.evaluators --images DIR --work DIR` scores every image under DIR with each of them,
through the same classes the benchmarks use, and prints one JSON line per evaluator with its output shape.
`save_clip` writes a random-weight CLIP folder that `eval.evaluators.clip.model` can point at, so run.py's evaluate
stage loads it like a Hub checkpoint.
"""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from respodiff.tokenizer import write_clip_tokenizer

# transformers' CLIPConfig defaults are ViT-B/32; ViT-L/14 (openai/clip-vit-large-patch14) differs in these sizes.
CLIP_SIZES = {
    "ViT-B/32": {},
    "ViT-L/14": dict(
        projection_dim=768,
        text_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12),
        vision_config=dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
                           patch_size=14),
    ),
}
WORDS = "a photo of man woman person doctor white black asian race".split()
SHARED_Q16_PROMPTS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "q16" / "ViT-L-14" / "prompts.p"


def save_clip(folder: Path, name: str) -> Path:
    """A transformers CLIP of `name`'s architecture at seeded random weights, with a processor, in `folder`."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(**CLIP_SIZES[name]))
    tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(folder / "_tokenizer", WORDS))
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def random_inception() -> torch.nn.Module:
    """Inception v3 (torchvision's layout of the network clean-fid's TorchScript holds) at random weights, as a
    2048-d pool-feature extractor: clean-fid's `custom_feat_extractor` seam takes it in place of the real one."""
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    model = inception_v3(weights=None, aux_logits=False, init_weights=False)
    model.fc = torch.nn.Identity()
    return model.eval()


def q16_prompts(work: Path) -> Path:
    """Q16's real ViT-L/14 prompts where this workplace holds them, else random ones of their shape. A copy in
    `work`: the loader writes its safetensors conversion beside the file it reads, never into the shared data."""
    path = work / "q16-prompts.p"
    if SHARED_Q16_PROMPTS.is_file():
        shutil.copyfile(SHARED_Q16_PROMPTS, path)
        return path
    with open(path, "wb") as handle:
        pickle.dump(np.random.default_rng(0).standard_normal((2, 768)).astype(np.float32), handle)
    return path


def score_all(images: list[Path], work: Path) -> list[dict]:
    from cleanfid import fid
    from transformers import CLIPModel, CLIPProcessor

    from respodiff.evaluation.classifiers import ClipScorer, NudeNetClassifier, Q16Classifier

    rows = []

    def timed(name: str, run) -> None:
        started = time.perf_counter()
        value = run()
        rows.append({"evaluator": name, "seconds": round(time.perf_counter() - started, 2),
                     "output": list(np.shape(value)) if not isinstance(value, float) else value})

    for name in CLIP_SIZES:
        folder = save_clip(work / name.replace("/", "-"), name)
        scorer = ClipScorer(CLIPModel.from_pretrained(folder), CLIPProcessor.from_pretrained(folder))
        timed(f"clip {name}", lambda scorer=scorer: scorer.scores(images, ["a photo of a doctor"] * len(images)))
    q16 = Q16Classifier.load("ViT-L-14", None, q16_prompts(work), quick_gelu=True)
    timed("q16 ViT-L-14", lambda: q16.probabilities(images))
    timed("nudenet 320n", lambda: NudeNetClassifier().flags(images))
    extractor = random_inception()
    folder = work / "fid-images"  # clean-fid reads one flat folder
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        shutil.copyfile(image, folder / f"{index}{image.suffix}")
    timed("fid inception-v3 (clean-fid custom extractor)", lambda: float(fid.compute_fid(
        str(folder), str(folder), mode="clean", custom_feat_extractor=extractor, num_workers=0, batch_size=2,
        device=torch.device("cpu"), verbose=False)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.smoke.evaluators", description=__doc__)
    parser.add_argument("--images", required=True, help="a folder of generated images (searched recursively)")
    parser.add_argument("--work", required=True, help="where the random-weight evaluators are written")
    args = parser.parse_args()
    images = sorted(p for p in Path(args.images).rglob("*") if p.suffix in (".png", ".jpg"))
    if not images:
        raise SystemExit(f"no images under {args.images}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    for row in score_all(images, work):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
