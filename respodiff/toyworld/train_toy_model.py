"""Train the toy-world latent diffusion model from scratch on a CPU and save it in diffusers layout.

    python -m respodiff.toyworld.train_toy_model --out models/toy

Stages (each resumable from --work-dir, default outputs/toy_train):
  1. render the training set from the planted caption distribution (world.sample_scenes);
  2. train a small AutoencoderKL (32 px -> 4 x 8 x 8 latents), then cache posterior mean/std and
     sharpen the decoder with the encoder frozen (the latent space the UNet learns stays fixed);
  3. train UNet2DConditionModel + CLIPTextModel jointly with eps-prediction on the DDPM schedule
     matching PROTOCOL.md's DDIM settings, dropping 10% of captions to "" for classifier-free
     guidance; an EMA of both is what gets saved. The last --refine-steps over-sample captions
     that name a race, most of all those naming a race and a kind (refine_weights says why);
  4. save a StableDiffusionPipeline (DDIMScheduler, no safety checker) with `save_pretrained`.
Sizes (toy_model.py) were picked so the whole run takes a little over an hour on 2 CPU cores shared with other jobs (see
--trial; measured ~0.55 s per UNet step of batch 64 with one thread); --max-minutes (default 90)
stops the UNet stage early if the machine is slower, and the model card records the steps done.
Deterministic: fixed seeds, one generator seed per step, so a resumed run matches an
uninterrupted one.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from respodiff.io import replace_atomically, save_torch_atomically

from .renderer import render_many
from .tokenizer import MODEL_MAX_LENGTH, build_tokenizer
from .toy_model import SCHEDULER_KW, make_text_encoder, make_unet, make_vae, save_pipeline
from .world import KINDS, RACES, sample_scenes


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------- helpers
def to_tensor(images_uint8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images_uint8).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


class Checkpointer:
    """Small resumable state under the work dir (our own files: loaded with weights_only)."""

    def __init__(self, path: Path):
        self.path = path

    def save(self, state: dict) -> None:
        save_torch_atomically(self.path, state)  # a run killed mid-save resumes from the previous checkpoint

    def load(self) -> dict | None:
        return torch.load(self.path, weights_only=True) if self.path.exists() else None


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.lerp_(pm, 1.0 - decay)


# ---------------------------------------------------------------------------- stages
def stage_data(args, work: Path):
    path = work / "data.npz"
    if path.exists():
        d = np.load(path)
        return d["images"], [str(c) for c in d["captions"]]
    t0 = time.time()
    scenes = sample_scenes(args.n_images, args.seed)
    images = render_many(scenes)
    captions = [s.caption for s in scenes]
    replace_atomically(path, lambda handle: np.savez(handle, images=images, captions=np.array(captions)))
    log(f"rendered {len(scenes)} images in {time.time() - t0:.0f}s")
    return images, captions


def stage_vae(args, work: Path, images: np.ndarray):
    vae_dir = work / "vae"
    if (vae_dir / "config.json").exists():
        from diffusers import AutoencoderKL

        return AutoencoderKL.from_pretrained(vae_dir)
    torch.manual_seed(args.seed)
    vae = make_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    ckpt = Checkpointer(work / "vae_ckpt.pt")
    start = 0
    if (st := ckpt.load()) is not None:
        vae.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        start = st["step"]
        log(f"vae: resumed at step {start}")
    gen = torch.Generator().manual_seed(args.seed + 1)
    t0 = time.time()
    for step in range(start, args.vae_steps):
        idx = torch.randint(0, len(images), (args.vae_batch,), generator=gen)
        x = to_tensor(images[idx.numpy()])
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        kl = 0.5 * (post.mean.pow(2) + post.var - 1.0 - post.logvar).mean()
        # L1 on top of MSE sharpens the flat colour regions the classifiers read.
        loss = F.mse_loss(rec, x) + F.l1_loss(rec, x) + args.vae_kl * kl
        # Cosine decay: the AE must be good quickly, and late small steps sharpen edges.
        for g in opt.param_groups:
            g["lr"] = args.vae_lr * 0.5 * (1 + math.cos(math.pi * step / args.vae_steps))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 50 == 0 or step == start:
            el = time.time() - t0
            log(f"vae step {step + 1}/{args.vae_steps} mse {F.mse_loss(rec, x).item():.5f} kl {kl.item():.3f} "
                f"({el / (step + 1 - start):.3f}s/it)")
        if (step + 1) % 250 == 0:
            ckpt.save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step + 1})
        if args.trial and step + 1 - start >= args.trial:
            return vae
    vae.eval()
    # Scale latents to unit variance as SD does; the pipeline divides by this factor on decode.
    with torch.no_grad():
        sample = to_tensor(images[: min(2048, len(images))])
        z = torch.cat([vae.encode(sample[i : i + 256]).latent_dist.mean for i in range(0, len(sample), 256)])
    vae.register_to_config(scaling_factor=float(1.0 / z.std()))
    vae.save_pretrained(vae_dir)
    log(f"vae done: scaling_factor {vae.config.scaling_factor:.4f}")
    return vae


def stage_latents(work: Path, vae, images: np.ndarray):
    path = work / "latents.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    means, stds = [], []
    with torch.no_grad():
        for i in range(0, len(images), 512):
            post = vae.encode(to_tensor(images[i : i + 512])).latent_dist
            means.append(post.mean)
            stds.append(post.std)
    lat = {"mean": torch.cat(means), "std": torch.cat(stds)}
    save_torch_atomically(path, lat)
    return lat


def stage_decoder(args, work: Path, vae, latents: dict):
    """Sharpen the decoder with the encoder frozen: the latent space (what the UNet learns) is
    unchanged, only the pixels decoded from it get crisper (blood, hats and eyes blur otherwise)."""
    from diffusers import AutoencoderKL

    out = work / "vae_dec"
    if (out / "config.json").exists():
        return AutoencoderKL.from_pretrained(out)
    images = np.load(work / "data.npz")["images"]
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    opt = torch.optim.AdamW(params, lr=args.dec_lr, weight_decay=0.0)
    gen = torch.Generator()
    t0 = time.time()
    vae.train()
    for step in range(args.dec_steps):
        gen.manual_seed(args.seed * 1_000_033 + step)
        idx = torch.randint(0, len(images), (args.vae_batch,), generator=gen)
        z = latents["mean"][idx] + latents["std"][idx] * torch.randn(latents["mean"][idx].shape, generator=gen)
        x = to_tensor(images[idx.numpy()])
        rec = vae.decode(z).sample
        loss = F.mse_loss(rec, x) + F.l1_loss(rec, x)
        for g in opt.param_groups:
            g["lr"] = args.dec_lr * 0.5 * (1 + math.cos(math.pi * step / args.dec_steps))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 50 == 0:
            log(f"decoder step {step + 1}/{args.dec_steps} mse {F.mse_loss(rec, x).item():.5f} "
                f"({(time.time() - t0) / (step + 1):.3f}s/it)")
    vae.eval()
    vae.save_pretrained(out)
    return vae


def stage_diffusion(args, work: Path, tokenizer, latents: dict, captions: list[str], scaling: float):
    from diffusers import DDPMScheduler

    torch.manual_seed(args.seed + 2)
    unet = make_unet()
    text_encoder = make_text_encoder(tokenizer)
    ema_unet, ema_te = copy.deepcopy(unet), copy.deepcopy(text_encoder)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    noise_sched = DDPMScheduler(**{k: v for k, v in SCHEDULER_KW.items() if k not in ("set_alpha_to_one", "steps_offset")})
    ids = tokenizer(captions, padding="max_length", max_length=MODEL_MAX_LENGTH, truncation=True,
                    return_tensors="pt").input_ids
    empty = tokenizer([""], padding="max_length", max_length=MODEL_MAX_LENGTH, return_tensors="pt").input_ids[0]
    total_steps = args.unet_steps + args.refine_steps
    weights = refine_weights(captions, args.refine_race_weight, args.refine_kind_race_weight)
    ckpt = Checkpointer(work / "unet_ckpt.pt")
    start, losses = 0, []
    if (st := ckpt.load()) is not None:
        unet.load_state_dict(st["unet"])
        text_encoder.load_state_dict(st["te"])
        ema_unet.load_state_dict(st["ema_unet"])
        ema_te.load_state_dict(st["ema_te"])
        opt.load_state_dict(st["opt"])
        start, losses = st["step"], list(st["losses"])
        log(f"unet: resumed at step {start}")
    gen = torch.Generator()
    alphas = noise_sched.alphas_cumprod
    t0, n_done, deadline = time.time(), 0, args.deadline
    step = start
    for step in range(start, total_steps):
        # One seed per step: a run resumed from a checkpoint draws exactly what an uninterrupted run would.
        gen.manual_seed(args.seed * 1_000_003 + step)
        refining = step >= args.unet_steps
        if refining:
            idx = torch.multinomial(weights, args.batch, replacement=True, generator=gen)
        else:
            idx = torch.randint(0, len(captions), (args.batch,), generator=gen)
        z0 = (latents["mean"][idx] + latents["std"][idx] * torch.randn(latents["mean"][idx].shape, generator=gen))
        z0 = z0 * scaling
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, 1000, (args.batch,), generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        tok = ids[idx].clone()
        drop = torch.rand(args.batch, generator=gen) < args.cfg_drop
        tok[drop] = empty
        emb = text_encoder(tok).last_hidden_state
        pred = unet(zt, t, encoder_hidden_states=emb).sample
        loss = F.mse_loss(pred, noise)
        for g in opt.param_groups:
            g["lr"] = unet_lr(args, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        d = min(args.ema, (1 + step) / (10 + step))
        ema_update(ema_unet, unet, d)
        ema_update(ema_te, text_encoder, d)
        losses.append(loss.item())
        n_done += 1
        if (step + 1) % 50 == 0 or step == start:
            el = time.time() - t0
            eta = el / n_done * (total_steps - step - 1) / 60
            log(f"unet step {step + 1}/{total_steps} loss(avg50) {np.mean(losses[-50:]):.4f} "
                f"{el / n_done:.3f}s/it eta {eta:.1f} min")
        if (step + 1) % args.ckpt_every == 0:
            ckpt.save({"unet": unet.state_dict(), "te": text_encoder.state_dict(), "ema_unet": ema_unet.state_dict(),
                       "ema_te": ema_te.state_dict(), "opt": opt.state_dict(), "step": step + 1, "losses": losses})
        if args.trial and n_done >= args.trial:
            break
        if time.time() > deadline:
            log(f"time budget of {args.max_minutes} min reached at step {step + 1}; stopping early")
            break
    return ema_unet, ema_te, {"unet_steps_done": step + 1, "final_loss_avg200": float(np.mean(losses[-200:]))}


def refine_weights(captions: list[str], race_weight: float, kind_race_weight: float) -> torch.Tensor:
    """Sampling weight of each caption during the refinement steps.

    "tan" (the middle tone) is the word the model learns last, and with it weak CFG pushes
    "a tan person" to dark: captions naming a race get race_weight. A caption naming a race
    and a kind gets kind_race_weight: each such pair ("a tan builder") is about 1 caption in
    200, and the kind without a race word (drawn with its planted skew) about 15 times as
    common, so without them the skew overrides the named race ("a tan builder": 16 of 16 dark).
    """
    kinds, races = set(KINDS), set(RACES)
    w = []
    for c in captions:
        words = set(c.split())
        if words & races:
            w.append(kind_race_weight if words & kinds else race_weight)
        else:
            w.append(1.0)
    return torch.tensor(w)


def unet_lr(args, step: int) -> float:
    """Warm-up then cosine to 10% over the main steps; the refinement steps restart at
    refine_lr_fraction of the peak and decay by cosine to the same 10% floor."""
    if step < args.unet_steps:
        warm = min(1.0, (step + 1) / 300)
        return args.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.unet_steps)))
    frac = (step - args.unet_steps) / max(1, args.refine_steps)
    top = max(args.refine_lr_fraction, 0.1)
    return args.lr * (0.1 + (top - 0.1) * 0.5 * (1 + math.cos(math.pi * frac)))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="models/toy")
    p.add_argument("--work-dir", default="outputs/toy_train")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-images", type=int, default=60_000)
    p.add_argument("--vae-steps", type=int, default=700)
    p.add_argument("--vae-batch", type=int, default=32)
    p.add_argument("--vae-lr", type=float, default=2e-3)
    p.add_argument("--vae-kl", type=float, default=1e-5)
    p.add_argument("--dec-steps", type=int, default=400)
    p.add_argument("--dec-lr", type=float, default=5e-4)
    p.add_argument("--unet-steps", type=int, default=3300)
    p.add_argument("--refine-steps", type=int, default=1600,
                   help="UNet steps after --unet-steps that over-sample captions naming a race")
    p.add_argument("--refine-race-weight", type=float, default=4.0,
                   help="sampling weight of a race-named caption during refinement (others: 1)")
    p.add_argument("--refine-kind-race-weight", type=float, default=24.0,
                   help="sampling weight of a caption naming a race and a kind during refinement")
    p.add_argument("--refine-lr-fraction", type=float, default=0.4,
                   help="refinement's starting LR as a fraction of --lr")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--cfg-drop", type=float, default=0.1)
    p.add_argument("--ckpt-every", type=int, default=250)
    p.add_argument("--threads", type=int, default=1,
                   help="1 is faster than 2 on a 2-core machine shared with other jobs (no OpenMP barrier stalls)")
    p.add_argument("--max-minutes", type=float, default=90.0,
                   help="wall-clock budget of the whole run; the UNet stage stops early to meet it")
    p.add_argument("--trial", type=int, default=0, help="time N steps of each stage, save nothing, exit")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    t_start = time.time()
    args.deadline = t_start + 60 * args.max_minutes - 60  # leave a minute to save
    work = Path(args.work_dir) / ("trial" if args.trial else "run")
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(work / "tokenizer_src")
    images, captions = stage_data(args, work)
    vae = stage_vae(args, work, images)
    if args.trial:
        scaling = 1.0
        latents = {"mean": torch.randn(len(captions), 4, 8, 8), "std": torch.full((len(captions), 4, 8, 8), 0.1)}
    else:
        latents = stage_latents(work, vae, images)
        scaling = vae.config.scaling_factor
        vae = stage_decoder(args, work, vae, latents)
    unet, te, info = stage_diffusion(args, work, tokenizer, latents, captions, scaling)
    if args.trial:
        log("trial done")
        return
    meta = {
        "what": "respodiff toy-world latent diffusion model, trained from scratch by the project on CPU",
        "command": "python -m respodiff.toyworld.train_toy_model " + " ".join(argv or __import__("sys").argv[1:]),
        "args": {k: v for k, v in vars(args).items() if k != "deadline"},
        "wall_minutes_this_invocation": round((time.time() - t_start) / 60, 1),
        **info,
    }
    save_pipeline(Path(args.out), vae, te, tokenizer, unet, meta)
    log(f"saved pipeline to {args.out}; this invocation took {meta['wall_minutes_this_invocation']} min")


if __name__ == "__main__":
    main()
