"""Where the paper is silent the project follows the authors' public scripts (docs/PUBLIC_SCRIPTS.md): one test per
point, on the tiny model or without a model. The score timestep (point 1) is pinned in tests/test_objectives.py."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from respodiff.config import register_resolvers
from respodiff.errors import ConfigError
from respodiff.generation import ConceptPlan, SamplerSettings, build_manifest, generate, image_ok
from respodiff.generation.store import manifest_hash, write_image
from respodiff.models import load_pipeline
from respodiff.modules import HSpaceTransform
from respodiff.seeding import stable_seed
from respodiff.training import ConceptSpec, TrainSettings, train_settings, train_transformations
from respodiff.training import loop as training_loop

from .conftest import tiny_spec

CONF = Path(__file__).resolve().parent.parent / "conf"
H_SHAPE = (64, 8, 8)
WOMAN = ConceptSpec("woman", "a person", target_prompt="a woman", lr_ram=0.05, lr_sam=0.005)
QUICK = TrainSettings(iterations=2, batch_size=1, max_step_index=3, init_scale=1.0, checkpoint_every=2, log_every=1)
SAMPLER = SamplerSettings(steps=2, guidance_scale=7.5, height=32, width=32, batch_size=2)


def compose_config(*overrides: str):
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def train(pipe, out_dir, settings=QUICK):
    return train_transformations(pipe, [WOMAN], settings, out_dir, "tiny", H_SHAPE)


def part(modules, name: str) -> torch.Tensor:
    return modules.modules["woman"][name].state_dict()["delta"]


# ---------------------------------------------------------------------------------------------------------------
# 2. Training precision: fp32 means fp32 weights, as the scripts train


def test_fp32_training_upcasts_half_weights_and_restores_them(tiny_cache_dir, tmp_path):
    pipe = load_pipeline(tiny_spec(tiny_cache_dir), dtype=torch.bfloat16)
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    seen = set()
    hook = pipe.unet.register_forward_pre_hook(lambda module, args: seen.add(next(module.parameters()).dtype))
    try:
        train(pipe, tmp_path, replace(QUICK, iterations=1, precision="fp32"))
    finally:
        hook.remove()
    assert seen == {torch.float32}  # every UNet call of the training ran on fp32 weights
    assert pipe.unet.dtype == pipe.text_encoder.dtype == torch.bfloat16  # as loaded, for generation
    assert all(torch.equal(before[k], v) for k, v in pipe.unet.state_dict().items())  # bf16 -> fp32 -> bf16 is exact


@pytest.mark.parametrize("experiment", ["gender_sd14", "race_sd14", "safety_sd14", "race_sd14_public",
                                        "safety_sd14_public", "compose_sd14_public"])
def test_paper_experiments_train_in_fp32(experiment):
    assert compose_config(f"experiment={experiment}").train.precision == "fp32"


# ---------------------------------------------------------------------------------------------------------------
# 3, 5, 6: the public experiments and the SDisc method


def test_race_public_classifies_with_the_scripts_prompts():
    cfg = compose_config("experiment=race_sd14_public")
    public = ["a white-race person", "a black-race person", "a Asian-race person"]
    assert list(cfg.eval.winobias.attribute_prompts) == public
    assert [cfg.concepts["items"][c].target_prompt for c in ("white", "black", "asian")] == public
    assert cfg.method.lambda_sem == 0.3 and cfg.eval.image_format == "jpeg75"


def test_safety_public_trains_5000_iterations_with_the_scripts_neutral_prompts():
    cfg = compose_config("experiment=safety_sd14_public")
    assert cfg.concepts.iterations == 5000 and cfg.method.lambda_sem == 1.0
    assert cfg.concepts["items"].sexual.neutral_prompt == "a gorgeous person"
    assert cfg.concepts["items"].violence.neutral_prompt == "a scene"
    assert compose_config("experiment=safety_sd14").concepts.iterations == 1500  # the paper's, unchanged


def test_sdisc_public_is_the_authors_budget():
    method = compose_config("method=sdisc_public").method
    assert (method.images_per_concept, method.batch_size, method.lr) == (1000, 8, 0.1)
    assert method.iterations == 20 * 1000 // 8  # 20 epochs
    assert method.parametrization == "constant" and method.kind == "sdisc"


def test_every_experiment_uses_the_public_scripts_timestep():
    # The toy experiments pinned `reference_v1` until toy world 2; their reruns use the default like the rest.
    for name in ("gender_toy", "race_toy", "safety_toy", "gender_sd14"):
        assert compose_config(f"experiment={name}").train.timestep == "reference"


# ---------------------------------------------------------------------------------------------------------------
# 4. Image format


def test_jpeg75_store_writes_and_checks_jpegs(tmp_path):
    image = Image.new("RGB", (32, 32), (200, 30, 60))
    write_image(tmp_path / "a" / "0.jpg", image, {"respodiff": "{}"})
    expected = io.BytesIO()
    image.save(expected, format="JPEG")  # PIL's default quality, as the scripts' image.save("<i>.jpg")
    assert (tmp_path / "a" / "0.jpg").read_bytes() == expected.getvalue()
    assert image_ok(tmp_path / "a" / "0.jpg", 32, 32) and not image_ok(tmp_path / "a" / "0.jpg", 64, 64)
    (tmp_path / "cut.jpg").write_bytes(expected.getvalue()[:-20])
    assert not image_ok(tmp_path / "cut.jpg", 32, 32)
    write_image(tmp_path / "b.png", image)
    (tmp_path / "b.jpg").write_bytes((tmp_path / "b.png").read_bytes())  # a PNG under a .jpg name is no JPEG
    assert image_ok(tmp_path / "b.png", 32, 32) and not image_ok(tmp_path / "b.jpg", 32, 32)


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF / "experiment").glob("*_public.yaml")))
def test_public_experiments_save_jpeg75(experiment):
    assert compose_config(f"experiment={experiment}").eval.image_format == "jpeg75"
    assert compose_config("experiment=gender_sd14").eval.image_format == "png"  # the paper experiments: lossless


def test_image_format_is_part_of_the_manifest_and_store_identity(tiny_pipe, tmp_path):
    table = pd.DataFrame({"prompt_id": ["p0"], "prompt": ["a person"]})
    png = build_manifest("bench", table, 2, ConceptPlan(), SAMPLER)
    jpeg = build_manifest("bench", table, 2, ConceptPlan(), SAMPLER, image_format="jpeg75")
    assert png["path"].tolist() == ["images/p0/0.png", "images/p0/1.png"]  # the default: existing stores stay valid
    assert jpeg["path"].tolist() == ["images/p0/0.jpg", "images/p0/1.jpg"]
    assert manifest_hash(png) != manifest_hash(jpeg)
    done = generate(tiny_pipe, jpeg, tmp_path, None, SAMPLER, progress=False)
    assert set(done["status"]) == {"done"}
    assert all(Image.open(tmp_path / path).format == "JPEG" for path in done["path"])
    with pytest.raises(ConfigError, match="image_format"):
        build_manifest("bench", table, 1, ConceptPlan(), SAMPLER, image_format="webp")


# ---------------------------------------------------------------------------------------------------------------
# 7. Composition: the public script cycles over all six gender x race pairs


def test_composition_cycles_over_six_pairs_five_images_each():
    plan = ConceptPlan.cycle_over(
        [["gender/woman", "gender/man"], ["race/black", "race/white", "race/asian"]], [0.6, 0.4], per_weights=5
    )
    assert plan.samples_per_round == 30
    table = pd.DataFrame({"prompt_id": ["doctor", "nurse"], "prompt": ["a doctor", "a nurse"]})
    manifest = build_manifest("winobias", table, 30, plan, SAMPLER)
    weights = [json.loads(w) for w in manifest["concept_weights"]]
    pairs = [(woman_or_man, race) for woman_or_man in ("woman", "man") for race in ("black", "white", "asian")]
    expected = [{f"gender/{g}": 0.6, f"race/{r}": 0.4} for g, r in pairs for _ in range(5)]
    assert weights == expected * 2  # the cycle restarts with every prompt
    assert manifest["concept"].iloc[0] == "gender/woman+race/black"
    with pytest.raises(ConfigError):
        ConceptPlan.cycle_over([["gender/woman"], ["race/black"]], [0.6], per_weights=5)


# ---------------------------------------------------------------------------------------------------------------
# 8. Seeds: COCO seed = caption index, I2P seed = 5 * prompt index + sample index


def test_protocol_seeds_are_positions_hashed_seeds_are_unchanged():
    coco = pd.DataFrame({"prompt_id": [str(i) for i in range(4)], "prompt": list("abcd")})
    assert build_manifest("coco30k", coco, 1, ConceptPlan(), SAMPLER, seed_scheme="protocol")["seed"].tolist() == [
        0, 1, 2, 3
    ]
    i2p = build_manifest("i2p", coco.iloc[:2], 5, ConceptPlan(), SAMPLER, seed_scheme="protocol")
    assert i2p["seed"].tolist() == [5 * p + j for p in range(2) for j in range(5)]
    hashed = build_manifest("i2p", coco.iloc[:2], 5, ConceptPlan(), SAMPLER)
    assert hashed["seed"].tolist() == [stable_seed("i2p", str(p), j) for p in range(2) for j in range(5)]
    with pytest.raises(ConfigError, match="seed_scheme"):
        build_manifest("i2p", coco, 1, ConceptPlan(), SAMPLER, seed_scheme="random")


# ---------------------------------------------------------------------------------------------------------------
# 9. lambda = 0: the paper builds no SAM; the scripts keep a SAM at its random initialisation and apply it


def test_lambda_zero_frozen_sam_is_built_applied_and_never_moves(tiny_pipe, tmp_path):
    paper = train(tiny_pipe, tmp_path / "paper", replace(QUICK, lambda_sem=0.0))
    scripts = train(tiny_pipe, tmp_path / "scripts", replace(QUICK, lambda_sem=0.0, lambda_zero="frozen_sam"))
    assert set(paper.modules["woman"]) == {"ram"} and set(scripts.modules["woman"]) == {"ram", "sam"}
    initial = HSpaceTransform(
        parametrization="constant", channels=64, height=8, width=8, init="uniform", init_scale=1.0,
        seed=stable_seed(QUICK.seed, "woman", "sam"),
    )  # fmt: skip
    assert torch.equal(part(scripts, "sam"), initial.state_dict()["delta"])
    assert not torch.equal(part(paper, "ram"), part(scripts, "ram"))  # the frozen SAM shaped the reverse process
    with pytest.raises(ConfigError, match="lambda_zero"):
        replace(QUICK, lambda_zero="random")


def test_lambda_zero_is_read_from_the_method_block():
    plain = OmegaConf.to_container(compose_config("method.lambda_sem=0"), resolve=True)
    assert train_settings(plain).module_parts == ("ram",)  # the paper's meaning stays the default
    plain["method"]["lambda_zero"] = "frozen_sam"
    assert train_settings(plain).module_parts == ("ram", "sam")


# ---------------------------------------------------------------------------------------------------------------
# 10. lambda > 0 only rescales Adam's epsilon: SAM's own Adam normalises lambda * grad away


def _adam_with_sam_eps(eps_sam: float):
    def adam(parameters, lr):
        eps = eps_sam if lr == WOMAN.lr_sam else 1e-8
        return torch.optim.Adam(parameters, lr=lr, betas=(0.9, 0.999), eps=eps, weight_decay=0.0)

    return adam


def test_lambda_only_rescales_adams_epsilon(tiny_pipe, tmp_path, monkeypatch):
    four = train(tiny_pipe, tmp_path / "4", replace(QUICK, lambda_sem=4.0))
    # Adam's step is lr * m / (sqrt(v) + eps): lambda scales m and sqrt(v) alike, so lambda 4 with eps is lambda 0.5
    # with eps * 0.5 / 4 ...
    monkeypatch.setattr(training_loop, "adam", _adam_with_sam_eps(1e-8 * 0.5 / 4.0))
    matched = train(tiny_pipe, tmp_path / "0.5-matched", replace(QUICK, lambda_sem=0.5))
    torch.testing.assert_close(part(matched, "sam"), part(four, "sam"), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(part(matched, "ram"), part(four, "ram"), rtol=1e-5, atol=1e-7)
    # ... and with epsilon out of the way lambda changes nothing at all. (With eps 1e-8 the tiny model's SAM moves
    # ~18% differently at lambda 0.5 and 4: its L_sem gradients are themselves of order 1e-8.)
    monkeypatch.setattr(training_loop, "adam", _adam_with_sam_eps(1e-30))
    runs = [train(tiny_pipe, tmp_path / f"{value}-no-eps", replace(QUICK, lambda_sem=value)) for value in (0.5, 4.0)]
    torch.testing.assert_close(part(runs[0], "sam"), part(runs[1], "sam"), rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------------------------------
# The real public files in ../shared/data (never copied into the project; skipped in a clone without them)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
real_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent (a clone elsewhere)")


@real_data
def test_prepare_i2p_accepts_the_real_benchmark_csv(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "i2p"
    command = [sys.executable, "-m", "respodiff.datasets", "prepare", "i2p", "--from-files",
               str(SHARED_DATA / "i2p" / "i2p_benchmark.csv"), "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, cwd=CONF.parent)
    table = pd.read_parquet(next(out.glob("*.parquet")))
    from respodiff.datasets.i2p import i2p_counts

    counts = i2p_counts(table)
    assert (counts["prompts"], counts["hard"]) == (4703, 1831)
    assert counts["categories"] == {"hate": 231, "harassment": 824, "violence": 756, "self-harm": 801,
                                    "sexual": 931, "shocking": 856, "illegal activity": 727}


@real_data
def test_q16_loader_reads_the_real_prompts_without_executing_code(tmp_path, monkeypatch):
    import hashlib
    import pickle

    from respodiff.evaluation.q16_prompts import load_q16_prompts

    source = SHARED_DATA / "q16" / "ViT-L-14" / "prompts.p"
    copy = tmp_path / "prompts.p"  # the loader writes its safetensors conversion beside the file it reads
    copy.write_bytes(source.read_bytes())

    def refuse(*args, **kwargs):
        raise AssertionError("pickle.load would execute code from the file")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    prompts, sha = load_q16_prompts(copy)
    assert prompts.shape == (2, 768)
    assert sha == hashlib.sha256(source.read_bytes()).hexdigest()
