"""Measure the planted biases in a trained toy model (the base-model row of the toy benchmarks).

    python -m respodiff.toyworld.check_toy_model --model models/toy [--steps 20] [--per-prompt 8]
    python -m respodiff.toyworld.check_toy_model --checkpoint outputs/toy_train/run   # mid-training EMA

Generates with the stock StableDiffusionPipeline (DDIM, CFG 7.5 unless --guidance, 32 px, output_type "np") and
reports, with the exact classifiers: gender and race DevRat per kind and their mean over kinds,
kind recognisability on the Winobias-toy prompts, the unsafe rate on the I2P-toy prompts, and how
well the concept prompts the method relies on ("a man", "a pale person", "violence", ...) work, and
whether each race word overrides each kind's planted skew ("a tan builder").

It also checks that the model keeps the world's distribution rather than its modes: per kind, the drawn
woman share and race shares beside the planted ones ("mild" kinds, planted woman share in [0.15, 0.85],
must stay within MILD_TOLERANCE and not collapse to 0 or 1), and the within-prompt diversity of the
generated images (mean pairwise cosine distance of FID-toy features, evaluation/diversity.py) beside the
same measure on clean renders of scenes the world draws for the same prompt.

--tracking-guidance repeats that part at other guidance scales. At scale 1 (no guidance) the pipeline samples the
model's own conditional distribution, so the gap there is the model's; what grows between scale 1 and the
evaluation scale is classifier-free guidance sharpening each kind's skew. --late-guidance applies the evaluation
scale only after the first k steps, which shows where along the denoising the shares move.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from respodiff.evaluation.intervals import share_intervals
from respodiff.io import write_json_atomically

from .classifiers import as_uint8, classify
from .prompts import TOY_PROMPTS, i2p_toy_table, winobias_toy_table
from .renderer import render_many
from .world import GENDER_SKEW, GENDERS, KINDS, RACE_SKEW, RACES, Scene, devrat, stable_int

MILD_RANGE = (0.15, 0.85)
MILD_TOLERANCE = 0.2


def pipeline_from_checkpoint(work: Path):
    """Assemble a pipeline from a training run's work dir (EMA weights of the last checkpoint)."""
    from diffusers import AutoencoderKL, DDIMScheduler

    from respodiff.models import sd_pipeline

    from .tokenizer import build_tokenizer
    from .toy_model import SCHEDULER_KW, make_text_encoder, make_unet

    tok = build_tokenizer(work / "tokenizer_src")
    state = torch.load(work / "unet_ckpt.pt", weights_only=True)
    unet, te = make_unet(), make_text_encoder(tok)
    unet.load_state_dict(state["ema_unet"])
    te.load_state_dict(state["ema_te"])
    print(f"checkpoint at step {state['step']}")
    vae = AutoencoderKL.from_pretrained(work / "vae")
    return sd_pipeline(vae, te.eval(), tok, unet.eval(), DDIMScheduler(**SCHEDULER_KW))


def generate(pipe, prompts: list[str], n: int, steps: int, guidance: float, tag: str,
             unguided_steps: int = 0) -> np.ndarray:
    """n images per prompt, seeded per prompt so results do not depend on batching; with `unguided_steps`, the
    first that many denoising steps run without guidance (scale 1) and the rest at `guidance`."""
    scale, extra = guidance, {}
    if unguided_steps:
        # diffusers' dynamic-guidance pattern: the pipeline reads its scale at every step. Starting just above 1 keeps
        # the guided batch (conditional and unconditional) built from the first step.
        def switch(pipeline, step, timestep, callback_kwargs):
            if step + 1 == unguided_steps:
                pipeline._guidance_scale = guidance
            return callback_kwargs

        scale, extra = 1.0 + 1e-6, {"callback_on_step_end": switch}
    out = []
    for p in prompts:
        g = torch.Generator().manual_seed(stable_int("check_toy_model", tag, p) % 2**31)
        res = pipe(p, num_images_per_prompt=n, num_inference_steps=steps, guidance_scale=scale,
                   output_type="np", generator=g, **extra)
        out.append(res.images)
    return np.concatenate(out)


def check(pipe, steps: int = 20, per_prompt: int = 8, guidance: float = 7.5) -> dict:
    pipe.set_progress_bar_config(disable=True)
    report: dict = {"steps": steps, "per_prompt": per_prompt, "guidance": guidance}

    per_kind, imgs, wb = winobias_per_kind(pipe, steps, per_prompt, guidance)
    report["per_kind"] = per_kind
    report["planted_tracking"] = planted_tracking(per_kind)
    report["diversity"] = diversity_vs_clean(imgs, wb, per_prompt)
    report["gender_devrat_mean"] = float(np.mean([v["gender_devrat"] for v in per_kind.values()]))
    report["race_devrat_mean"] = float(np.mean([v["race_devrat"] for v in per_kind.values()]))
    report["kind_accuracy"] = float(np.mean([v["kind_accuracy"] for v in per_kind.values()]))

    i2p = i2p_toy_table()
    imgs = generate(pipe, list(i2p.prompt), per_prompt, steps, guidance, "i2p")
    unsafe = classify(imgs).unsafe.to_numpy().reshape(len(i2p), per_prompt)
    report["i2p_unsafe_rate"] = float(unsafe.mean())
    report["i2p_unsafe_rate_hard"] = float(unsafe[i2p.hard.to_numpy()].mean())

    concept = {"neutral": TOY_PROMPTS["neutral"], "safety_neutral": TOY_PROMPTS["safety_neutral"],
               "safety_negative": TOY_PROMPTS["safety_negative"],
               **{f"gender:{g}": p for g, p in TOY_PROMPTS["gender_targets"].items()},
               **{f"race:{r}": p for r, p in TOY_PROMPTS["race_targets"].items()}}
    imgs = generate(pipe, list(concept.values()), 2 * per_prompt, steps, guidance, "concepts")
    pred = classify(imgs)
    pred["key"] = np.repeat(list(concept), 2 * per_prompt)
    rows = {}
    for key in concept:
        sub = pred[pred.key == key]
        row = {"woman_share": float((sub.gender == "woman").mean()), "unsafe_rate": float(sub.unsafe.mean()),
               **{f"{r}_share": float((sub.race == r).mean()) for r in RACES}}
        if key.startswith("gender:"):
            row["target_accuracy"] = float((sub.gender == key.split(":")[1]).mean())
        if key.startswith("race:"):
            row["target_accuracy"] = float((sub.race == key.split(":")[1]).mean())
        rows[key] = row
    report["concept_prompts"] = rows
    report["race_named_kinds"] = race_named_kinds(pipe, steps, per_prompt, guidance)
    return report


def winobias_per_kind(pipe, steps: int, per_prompt: int, guidance: float,
                      unguided_steps: int = 0) -> tuple[dict, np.ndarray, pd.DataFrame]:
    """Per kind, over its Winobias-toy prompts: DevRats, drawn shares, kind accuracy, unsafe rate."""
    wb = winobias_toy_table()
    imgs = generate(pipe, list(wb.prompt), per_prompt, steps, guidance, "winobias", unguided_steps)
    pred = classify(imgs)
    pred["profession"] = np.repeat(wb.profession.to_numpy(), per_prompt)
    per_kind = {}
    for k in KINDS:
        sub = pred[pred.profession == k]
        women = int((sub.gender == "woman").sum())
        low, high = share_intervals(np.array([women, len(sub) - women]))  # 95% Clopper-Pearson
        per_kind[k] = {
            "gender_devrat": devrat([(sub.gender == g).sum() for g in GENDERS]),
            "woman_share": women / len(sub),
            "woman_share_interval": [float(low[0]), float(high[0])],
            "race_devrat": devrat([(sub.race == r).sum() for r in RACES]),
            "race_shares": [float((sub.race == r).mean()) for r in RACES],
            "kind_accuracy": float((sub.kind == k).mean()),
            "unsafe_rate": float(sub.unsafe.mean()),
            "images": len(sub),
        }
    return per_kind, imgs, wb


def tracking_by_guidance(pipe, steps: int, per_prompt: int, scales: list[float], guidance: float = 7.5,
                         unguided_steps: list[int] = ()) -> dict:
    """Drawn-vs-planted shares and diversity at each guidance scale (scale 1: the model's own distribution), and at
    `guidance` applied only after each of `unguided_steps` (where along the denoising the shares move)."""
    out = {}
    settings = [(f"{scale:g}", scale, 0) for scale in scales]
    settings += [(f"{guidance:g} after step {k}", guidance, k) for k in unguided_steps]
    for key, scale, unguided in settings:
        per_kind, imgs, _ = winobias_per_kind(pipe, steps, per_prompt, scale, unguided)
        tracking = planted_tracking(per_kind)
        out[key] = {
            "drawn_woman_share": {k: per_kind[k]["woman_share"] for k in KINDS},
            "drawn_race_shares": {k: per_kind[k]["race_shares"] for k in KINDS},
            "mild_kinds_within_tolerance": tracking["mild_kinds_within_tolerance"],
            "largest_mild_gap": max(r["gap"] for r in tracking["per_kind"].values() if r["mild"]),
            "diversity": float(np.mean(within_prompt_diversity(imgs, per_prompt))),
            "kind_accuracy": float(np.mean([v["kind_accuracy"] for v in per_kind.values()])),
        }
    return out


def planted_tracking(per_kind: dict) -> dict:
    """Drawn vs planted attribute shares per kind, and whether every mild kind stays near its planted share."""
    rows, mild_ok = {}, True
    for k, v in per_kind.items():
        planted = GENDER_SKEW[k]
        mild = MILD_RANGE[0] <= planted <= MILD_RANGE[1]
        gap = abs(v["woman_share"] - planted)
        collapsed = v["woman_share"] in (0.0, 1.0)
        if mild:
            mild_ok &= gap <= MILD_TOLERANCE and not collapsed
        race_tv = 0.5 * float(np.abs(np.asarray(v["race_shares"]) - np.asarray(RACE_SKEW[k])).sum())
        rows[k] = {"planted_woman_share": planted, "drawn_woman_share": v["woman_share"],
                   "drawn_interval": v.get("woman_share_interval"), "gap": gap,
                   "mild": mild, "collapsed": collapsed, "race_tv_to_planted": race_tv}
    return {"per_kind": rows, "mild_kinds_within_tolerance": bool(mild_ok), "tolerance": MILD_TOLERANCE,
            "mild_range": list(MILD_RANGE),
            "mean_race_tv_to_planted": float(np.mean([r["race_tv_to_planted"] for r in rows.values()]))}


def diversity_vs_clean(images: np.ndarray, table: pd.DataFrame, per_prompt: int) -> dict:
    """Within-prompt diversity of the generated Winobias-toy images and of clean renders of as many
    scenes per prompt, drawn from the world's distribution for the prompt's kind."""
    clean = []
    for _, row in table.iterrows():
        rng = np.random.default_rng(stable_int("check_toy_model", "clean", row.prompt_id))
        k = row.profession
        clean += [Scene(k, "woman" if rng.random() < GENDER_SKEW[k] else "man",
                        RACES[int(rng.choice(3, p=RACE_SKEW[k]))], False, int(rng.integers(0, 2**62)))
                  for _ in range(per_prompt)]
    generated = within_prompt_diversity(images, per_prompt)
    rendered = within_prompt_diversity(render_many(clean), per_prompt)
    gen, ref = float(np.mean(generated)), float(np.mean(rendered))
    return {"generated": gen, "clean_renders": ref, "ratio": gen / ref if ref else float("nan"),
            "min_prompt_generated": float(np.min(generated)), "embedding": "FID-toy CNN features"}


def within_prompt_diversity(images: np.ndarray, per_prompt: int) -> list[float]:
    """Per consecutive group of `per_prompt` images (one prompt's), the mean pairwise cosine distance of their
    FID-toy features (evaluation/diversity.py)."""
    from respodiff.evaluation.diversity import embedding_column, mean_pairwise_distance, stored_embeddings

    from .fid_features import toy_fid_features

    units = stored_embeddings(embedding_column(toy_fid_features(as_uint8(images))))
    return [mean_pairwise_distance(units[i:i + per_prompt]) for i in range(0, len(units), per_prompt)]


def race_named_kinds(pipe, steps: int, per_prompt: int, guidance: float) -> dict:
    """How often "a <race> <kind>" is drawn in the named tone and as the named kind: a race word
    must override each kind's planted skew, or no race module can move that kind."""
    pairs = [(r, k) for r in RACES for k in KINDS]
    imgs = generate(pipe, [f"a {r} {k}" for r, k in pairs], per_prompt, steps, guidance, "race_named_kinds")
    pred = classify(imgs)
    out = {}
    for i, (r, k) in enumerate(pairs):
        sub = pred.iloc[i * per_prompt:(i + 1) * per_prompt]
        out[f"a {r} {k}"] = {"race_share": float((sub.race == r).mean()), "kind_accuracy": float((sub.kind == k).mean())}
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="models/toy")
    p.add_argument("--checkpoint", default=None, help="training work dir; evaluates its last EMA checkpoint")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps (20: the toy experiments' evaluation setting)")
    p.add_argument("--per-prompt", type=int, default=8)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--tracking-guidance", type=float, nargs="*", default=[1.0],
                   help="also report drawn-vs-planted shares at these guidance scales (1: no guidance)")
    p.add_argument("--late-guidance", type=int, nargs="*", default=[],
                   help="also report them with --guidance applied only after this many unguided steps")
    p.add_argument("--settling", action="store_true",
                   help="also report at which step gender, race and kind settle for the mild kinds' prompts "
                        "(guidance_probe.py), without guidance and at --guidance")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the report here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.checkpoint:
        pipe = pipeline_from_checkpoint(Path(args.checkpoint))
    else:
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(args.model)
    t0 = time.time()
    report = check(pipe, args.steps, args.per_prompt, args.guidance)
    if args.tracking_guidance or args.late_guidance:
        report["tracking_by_guidance"] = tracking_by_guidance(pipe, args.steps, args.per_prompt,
                                                              args.tracking_guidance, args.guidance, args.late_guidance)
    if args.settling:
        from .guidance_probe import settling

        mild = [k for k, share in GENDER_SKEW.items() if MILD_RANGE[0] <= share <= MILD_RANGE[1]]
        report["settling"] = settling(pipe, [f"photo of a {k}" for k in mild], 2 * args.per_prompt, args.steps,
                                      [1.0, args.guidance])
    report["seconds"] = round(time.time() - t0, 1)
    print(pd.DataFrame(report["per_kind"]).T.to_string())
    print(pd.DataFrame(report["concept_prompts"]).T.to_string())
    print(pd.DataFrame(report["race_named_kinds"]).T.to_string())
    print(pd.DataFrame(report["planted_tracking"]["per_kind"]).T.to_string())
    if "tracking_by_guidance" in report:
        print(pd.DataFrame({g: r["drawn_woman_share"] for g, r in report["tracking_by_guidance"].items()})
              .assign(planted=pd.Series(GENDER_SKEW)).to_string())
    if "settling" in report:
        print(pd.DataFrame({(scale, prompt): {a: r["settled_at_step"] for a, r in rows.items()}
                            for scale, by_prompt in report["settling"].items() for prompt, rows in by_prompt.items()}))
    tables = ("per_kind", "concept_prompts", "race_named_kinds", "planted_tracking", "tracking_by_guidance",
              "settling")
    print(json.dumps({k: v for k, v in report.items() if k not in tables}, indent=2))
    if args.json:
        write_json_atomically(args.json, report)


if __name__ == "__main__":
    main()
