"""Target scores, losses and the reverse process that draws z_k, on the tiny models."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler

from respodiff.hspace import HSpaceEditor
from respodiff.modules import HSpaceTransform
from respodiff.objectives import (
    encode_text,
    fairness_target,
    resp_loss,
    reverse_latents,
    safety_target,
    score_timesteps,
    sem_loss,
    unet_eps,
)

SIZE = (32, 32)  # pixels; latents 16 x 16


@pytest.fixture
def editor(tiny_pipe):
    editor = HSpaceEditor(tiny_pipe.unet)
    yield editor
    editor.remove()


@pytest.fixture
def scheduler(tiny_pipe):
    scheduler = DDIMScheduler.from_config(tiny_pipe.scheduler.config)
    scheduler.set_timesteps(50)
    return scheduler


@pytest.fixture
def prompts(tiny_pipe):
    return {name: encode_text(tiny_pipe, text, SIZE) for name, text in
            [("uncond", None), ("neutral", "a person"), ("target", "a woman"), ("bad", "violence")]}  # fmt: skip


def latents(rows: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, 4, 16, 16, generator=torch.Generator().manual_seed(seed))


def module(seed: int) -> HSpaceTransform:
    return HSpaceTransform("constant", channels=64, height=8, width=8, init_scale=1.0, seed=seed)


def test_uncond_conditioning_is_what_the_pipelines_use(tiny_pipe, tiny_sdxl_pipe):
    _, negative = tiny_pipe.encode_prompt("a person", "cpu", 1, True)
    assert torch.equal(encode_text(tiny_pipe, None, SIZE).hidden_states, negative)
    assert torch.equal(encode_text(tiny_pipe, "", SIZE).hidden_states, negative)
    sdxl = encode_text(tiny_sdxl_pipe, None, SIZE)  # force_zeros_for_empty_prompt
    assert torch.count_nonzero(sdxl.hidden_states) == 0 and torch.count_nonzero(sdxl.text_embeds) == 0
    assert sdxl.time_ids.tolist() == [[32.0, 32.0, 0.0, 0.0, 32.0, 32.0]]


def test_fairness_target_is_the_guided_combination_of_separate_calls(tiny_pipe, prompts):
    z, t = latents(2), torch.tensor([981, 501])
    targets = fairness_target(tiny_pipe, z, t, prompts["uncond"], prompts["target"], 4.0, prompts["neutral"])
    with torch.no_grad():
        eps_uncond = unet_eps(tiny_pipe, z, t, prompts["uncond"])
        eps_target = unet_eps(tiny_pipe, z, t, prompts["target"])
        eps_neutral = unet_eps(tiny_pipe, z, t, prompts["neutral"])
    expected = eps_uncond + 4.0 * (eps_target - eps_uncond)
    torch.testing.assert_close(targets.resp, expected, rtol=0, atol=4 * 5e-6)
    torch.testing.assert_close(targets.sem, eps_neutral, rtol=0, atol=5e-6)
    assert not targets.resp.requires_grad
    assert fairness_target(tiny_pipe, z, t, prompts["uncond"], prompts["target"]).sem is None


def test_safety_target_puts_the_negative_concept_in_place_of_the_unconditional(tiny_pipe, prompts):
    z, t = latents(2, seed=1), torch.tensor([741, 21])
    targets = safety_target(tiny_pipe, z, t, prompts["bad"], prompts["neutral"], 12.0)
    with torch.no_grad():
        eps_bad = unet_eps(tiny_pipe, z, t, prompts["bad"])
        eps_neutral = unet_eps(tiny_pipe, z, t, prompts["neutral"])
    # One batched call vs separate calls: float differences of ~1e-6, amplified by the guidance scale.
    torch.testing.assert_close(targets.resp, eps_bad + 12.0 * (eps_neutral - eps_bad), rtol=0, atol=12 * 5e-6)
    torch.testing.assert_close(targets.sem, eps_neutral, rtol=0, atol=5e-6)


def test_targets_work_on_sdxl(tiny_sdxl_pipe):
    neutral, target, uncond = (encode_text(tiny_sdxl_pipe, p, SIZE) for p in ("a person", "a woman", None))
    z, t = latents(2), torch.tensor([981, 961])
    targets = fairness_target(tiny_sdxl_pipe, z, t, uncond, target, 4.0, neutral)
    with torch.no_grad():
        eps_target = unet_eps(tiny_sdxl_pipe, z, t, target)
        eps_uncond = unet_eps(tiny_sdxl_pipe, z, t, uncond)
    torch.testing.assert_close(targets.resp, eps_uncond + 4.0 * (eps_target - eps_uncond), rtol=0, atol=4 * 5e-6)


def test_each_loss_reaches_only_its_module_and_only_through_the_decoder(tiny_pipe, editor, prompts):
    ram, sam = module(1), module(2)
    z, t = latents(2, seed=2), torch.tensor([981, 481])
    targets = fairness_target(tiny_pipe, z, t, prompts["uncond"], prompts["target"], 4.0, prompts["neutral"])
    encoder_out = []
    handle = tiny_pipe.unet.down_blocks[-1].register_forward_hook(lambda m, a, out: encoder_out.append(out[0]))
    try:
        loss = resp_loss(tiny_pipe, editor, ram, z, t, prompts["neutral"], targets.resp)
        loss.backward()
        assert ram.delta.grad is not None and ram.delta.grad.abs().sum() > 0
        assert sam.delta.grad is None
        ram.delta.grad = None

        loss = sem_loss(tiny_pipe, editor, [ram], sam, z, t, prompts["neutral"], targets.sem, 0.5)
        loss.backward()
        assert sam.delta.grad is not None and sam.delta.grad.abs().sum() > 0
        assert ram.delta.grad is None
    finally:
        handle.remove()
    assert encoder_out and not any(out.requires_grad for out in encoder_out)  # no graph through the encoder
    assert all(p.grad is None for p in tiny_pipe.unet.parameters())
    assert editor.current is None  # the losses leave no edit behind


def test_sem_loss_applies_the_fixed_ram(tiny_pipe, editor, prompts):
    z, t = latents(1, seed=3), torch.tensor([501])
    ram, sam = module(1), module(2)
    eps_neutral = fairness_target(tiny_pipe, z, t, prompts["uncond"], prompts["target"], 4.0, prompts["neutral"]).sem
    with torch.no_grad():
        with editor.editing([ram, sam]):
            both = unet_eps(tiny_pipe, z, t, prompts["neutral"])
        loss = sem_loss(tiny_pipe, editor, [ram], sam, z, t, prompts["neutral"], eps_neutral, 0.5)
    torch.testing.assert_close(loss, 0.5 * torch.nn.functional.mse_loss(both, eps_neutral))


def test_reverse_process_carries_no_graph(tiny_pipe, editor, scheduler, prompts):
    z = reverse_latents(
        tiny_pipe, scheduler, editor, [module(1), module(2)], latents(2), torch.tensor([2, 1]),
        prompts["uncond"], prompts["neutral"], 3.0,
    )  # fmt: skip
    assert not z.requires_grad and z.grad_fn is None


def test_vectorised_reverse_process_equals_per_sample_runs(tiny_pipe, editor, scheduler, prompts):
    noise, steps = latents(4, seed=4), torch.tensor([3, 0, 5, 1])
    transformations = [module(1)]
    common = (prompts["uncond"], prompts["neutral"], 3.0)
    batched = reverse_latents(tiny_pipe, scheduler, editor, transformations, noise, steps, *common)
    for row in range(4):
        alone = reverse_latents(
            tiny_pipe, scheduler, editor, transformations, noise[row : row + 1], steps[row : row + 1], *common
        )
        torch.testing.assert_close(batched[row : row + 1], alone, rtol=0, atol=1e-5)
    assert torch.equal(batched[1], noise[1])  # k = 0: the fresh noise itself
    assert not torch.allclose(batched[0], noise[0])


def test_reverse_process_is_the_pipelines_own_loop_stopped_at_k(tiny_pipe, editor, scheduler, prompts):
    """The training latents are what the stock pipeline's sampler holds after k steps, edit on the cond half."""
    k, noise, ram = 4, latents(1, seed=5), module(3)
    ours = reverse_latents(
        tiny_pipe, scheduler, editor, [ram], noise, torch.tensor([k]), prompts["uncond"], prompts["neutral"], 3.0
    )
    seen = {}

    def stop_after_k(pipe, i, t, kwargs):
        if i == k - 1:
            seen["latents"] = kwargs["latents"].clone()
            pipe._interrupt = True  # the remaining steps are skipped
        return kwargs

    with editor.editing([ram], cfg_half=True):
        tiny_pipe(
            prompt_embeds=prompts["neutral"].hidden_states,
            negative_prompt_embeds=prompts["uncond"].hidden_states,
            latents=noise.clone(),
            num_inference_steps=50,
            guidance_scale=3.0,
            output_type="latent",
            callback_on_step_end=stop_after_k,
        )
    torch.testing.assert_close(ours, seen["latents"], rtol=0, atol=1e-6)


def test_score_timesteps_reference_and_exact(scheduler):
    k = torch.arange(49)
    exact = score_timesteps(scheduler, k, "exact")
    reference = score_timesteps(scheduler, k, "reference")
    assert exact.tolist() == (981 - 20 * k).tolist()
    assert exact.tolist() == scheduler.timesteps[:49].tolist()  # where z_k really sits
    assert reference.tolist() == (1000 - 20 * k).tolist()  # the public scripts' choice, 19 steps noisier
    # ... checked against diffusers itself, as train_respodiff_fair.py does it: SD v1.4's scheduler config (no
    # timestep_spacing key: leading), set_timesteps(1000), index k * 1000 / 50.
    public = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1, num_train_timesteps=1000,
    )  # fmt: skip
    public.set_timesteps(1000)
    assert reference.tolist() == [int(public.timesteps[int(i * 1000 / 50)]) for i in k]
    assert score_timesteps(scheduler, k, "reference_v1").tolist() == (999 - 20 * k).tolist()  # toy experiments' pin
    with pytest.raises(ValueError):
        score_timesteps(scheduler, k, "midpoint")
