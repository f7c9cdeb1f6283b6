"""Feature extractor for toy-world FID: a small CNN trained by this project on toy renders.

Inception-v3 features mean little on 32 x 32 flat-colour pictures, so toy FID uses a network that
knows this world: it is trained (``python -m respodiff.toyworld.fid_features --out
models/toy/fid_features``) to read kind, gender, race and blood from renders and, from a random
blur/noise/colour-shift degradation applied to half the batch, to regress the degradation
strength. The 128-d pooled features therefore move both with what is drawn (class balance) and
with how well it is drawn (fidelity), which is what FID should see. Weights are committed as
safetensors under models/toy/fid_features/.
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from respodiff.io import write_json_atomically

from .renderer import render_many
from .world import GENDERS, KINDS, RACES, sample_scenes, stable_int

FEATURE_DIM = 128
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "models" / "toy" / "fid_features"
VERSION = "toy-fid-cnn/2"


class ToyFeatureNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),  # 16x16
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, FEATURE_DIM, 3, stride=2, padding=1), nn.ReLU(),  # 8x8
            nn.Conv2d(FEATURE_DIM, FEATURE_DIM, 3, padding=1),
        )
        self.heads = nn.ModuleDict({
            "kind": nn.Linear(FEATURE_DIM, len(KINDS)),
            "gender": nn.Linear(FEATURE_DIM, len(GENDERS)),
            "race": nn.Linear(FEATURE_DIM, len(RACES)),
            "unsafe": nn.Linear(FEATURE_DIM, 2),
            "degradation": nn.Linear(FEATURE_DIM, 1),
        })

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: float NCHW in [-1, 1] -> (N, 128)."""
        return F.relu(self.body(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        return {k: h(f) for k, h in self.heads.items()}


def _degrade(x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random blur + noise + colour shift on half the batch; returns images and strength in [0, 1]."""
    n = len(x)
    s = torch.rand(n, generator=gen) * (torch.rand(n, generator=gen) < 0.5)
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
    blurred = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), (k[:, None] * k[None])[None, None].repeat(3, 1, 1, 1),
                       groups=3)
    w = s.view(-1, 1, 1, 1)
    out = (1 - w) * x + w * blurred
    out = out + 0.15 * w * torch.randn(x.shape, generator=gen)
    out = out + 0.1 * w * (torch.rand(n, 3, 1, 1, generator=gen) * 2 - 1)
    return out.clamp(-1, 1), s


def train(out: Path, steps: int = 1500, batch: int = 64, seed: int = 0) -> None:
    torch.manual_seed(seed)
    scenes = sample_scenes(20_000, stable_int("toy-fid-features", seed))
    images = torch.from_numpy(render_many(scenes)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    labels = {
        "kind": torch.tensor([KINDS.index(s.kind) for s in scenes]),
        "gender": torch.tensor([GENDERS.index(s.gender) for s in scenes]),
        "race": torch.tensor([RACES.index(s.race) for s in scenes]),
        "unsafe": torch.tensor([int(s.unsafe) for s in scenes]),
    }
    net = ToyFeatureNet()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    for step in range(steps):
        idx = torch.randint(0, len(images), (batch,), generator=gen)
        x, s = _degrade(images[idx], gen)
        pred = net(x)
        loss = sum(F.cross_entropy(pred[k], labels[k][idx]) for k in labels)
        loss = loss + 4.0 * F.mse_loss(pred["degradation"].squeeze(1), s)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 100 == 0:
            print(f"fid-features step {step + 1}/{steps} loss {loss.item():.4f} ({time.time() - t0:.0f}s)", flush=True)
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, out / "model.safetensors")
    meta = {"version": VERSION, "feature_dim": FEATURE_DIM, "steps": steps, "batch": batch, "seed": seed,
            "input": "uint8 NHWC 32x32 RGB", "trained_on": "toy-world renders (respodiff.toyworld)"}
    write_json_atomically(out / "config.json", meta)


@functools.lru_cache(maxsize=4)
def load_feature_net(folder: str | None = None) -> ToyFeatureNet:
    from safetensors.torch import load_file

    path = Path(folder) if folder else DEFAULT_DIR
    weights = path / "model.safetensors"
    if not weights.exists():
        from ..errors import MissingAssetError  # the project's user-facing error type

        raise MissingAssetError(
            f"toy FID features not found at {weights}; run python -m respodiff.toyworld.fid_features --out {path}"
        )
    net = ToyFeatureNet()
    net.load_state_dict(load_file(weights))
    return net.eval().requires_grad_(False)  # a fixed measuring instrument, shared via the cache


def toy_fid_features(images_uint8_nhwc, batch_size: int = 512, folder: str | None = None) -> np.ndarray:
    """(N, 32, 32, 3) uint8 images -> (N, 128) float64 features for FID."""
    x = np.asarray(images_uint8_nhwc)
    if x.ndim != 4 or x.shape[1:] != (32, 32, 3):
        raise ValueError(f"expected (N, 32, 32, 3) images, got {x.shape}")
    if x.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {x.dtype}")
    net = load_feature_net(folder)
    feats = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            t = torch.from_numpy(x[i : i + batch_size]).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
            feats.append(net.features(t).double().numpy())
    return np.concatenate(feats) if feats else np.zeros((0, FEATURE_DIM))


class CleanFidToyExtractor(nn.Module):
    """clean-fid custom extractor: called on float/uint8 NCHW batches in 0..255. Pass it with
    ``custom_feat_extractor=CleanFidToyExtractor(), custom_fn_resize=lambda x: x`` so the 32 px
    images are not resized to 299."""

    def __init__(self, folder: str | None = None) -> None:
        super().__init__()
        self.net = load_feature_net(folder)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.net.features(batch.float().div(127.5).sub(1.0))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(DEFAULT_DIR))
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    train(Path(args.out), steps=args.steps, seed=args.seed)


if __name__ == "__main__":
    main()
