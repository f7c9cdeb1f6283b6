"""The h-space hook on stock diffusers UNets, checked against a decoder run by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from respodiff.hspace import HSpaceEditor, hspace_shape


class Constant(nn.Module):
    """A fixed delta, so the expected edit is known exactly."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.value


@pytest.fixture
def editor(request):
    """An editor on the requested pipeline's UNet, removed again so shared pipelines stay unedited."""
    pipe = request.getfixturevalue(getattr(request, "param", "tiny_pipe"))
    editor = HSpaceEditor(pipe.unet)
    yield editor
    editor.remove()


def unet_inputs(unet, rows: int, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    config = unet.config
    inputs = dict(
        sample=torch.randn(rows, config.in_channels, 16, 16, generator=generator),
        timestep=torch.tensor(500),
        encoder_hidden_states=torch.randn(rows, 7, config.cross_attention_dim, generator=generator),
    )
    if config.addition_embed_type == "text_time":  # SDXL: pooled text + size micro-conditioning
        pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        inputs["added_cond_kwargs"] = dict(
            text_embeds=torch.randn(rows, pooled, generator=generator),
            time_ids=torch.tensor([[32.0, 32.0, 0.0, 0.0, 32.0, 32.0]]).expand(rows, 6),
        )
    return inputs


@torch.no_grad()
def run(unet, inputs) -> torch.Tensor:
    return unet(**inputs).sample


@torch.no_grad()
def capture_decoder_inputs(unet, inputs) -> tuple[torch.Tensor, list[dict]]:
    """h (the mid block's output) and the keyword arguments each up block receives, from an unedited run."""
    captured: list[dict] = []
    mids: list[torch.Tensor] = []
    handles = [unet.mid_block.register_forward_hook(lambda module, args, output: mids.append(output))]
    for block in unet.up_blocks:
        handles.append(
            block.register_forward_pre_hook(
                lambda module, args, kwargs: captured.append(dict(kwargs)), with_kwargs=True
            )
        )
    try:
        run(unet, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return mids[0], captured


@torch.no_grad()
def decode_by_hand(unet, h: torch.Tensor, block_kwargs: list[dict]) -> torch.Tensor:
    """UNet2DConditionModel.forward's steps 5-6 (up blocks, then norm/act/conv_out) on a given h."""
    sample = h
    for block, kwargs in zip(unet.up_blocks, block_kwargs):
        sample = block(**{**kwargs, "hidden_states": sample})
    if unet.conv_norm_out is not None:
        sample = unet.conv_act(unet.conv_norm_out(sample))
    return unet.conv_out(sample)


def random_delta(unet, seed: int) -> torch.Tensor:
    shape = hspace_shape(unet, 16)
    return torch.randn(1, *shape, generator=torch.Generator().manual_seed(seed))


def test_h_shape_of_tiny_models(tiny_pipe, tiny_sdxl_pipe):
    assert hspace_shape(tiny_pipe.unet, 16) == (64, 8, 8)
    assert hspace_shape(tiny_sdxl_pipe.unet, 16) == (64, 8, 8)


@pytest.mark.parametrize("cfg_half", [False, True])
def test_zero_transformation_is_exactly_the_unhooked_unet(tiny_pipe, editor, cfg_half):
    unet = tiny_pipe.unet
    inputs = unet_inputs(unet, rows=4)
    editor.remove()
    baseline = run(unet, inputs)
    editor = HSpaceEditor(unet)
    editor.set([Constant(torch.zeros(1, 64, 8, 8))], cfg_half=cfg_half)
    assert torch.equal(run(unet, inputs), baseline)


@pytest.mark.parametrize("editor", ["tiny_pipe", "tiny_sdxl_pipe"], indirect=True)
def test_cfg_half_edits_only_the_conditional_half(editor):
    unet = editor.unet
    inputs = unet_inputs(unet, rows=4)
    h, block_kwargs = capture_decoder_inputs(unet, inputs)
    baseline = run(unet, inputs)
    delta = random_delta(unet, seed=1)

    editor.set([Constant(delta)], cfg_half=True)
    edited = run(unet, inputs)

    assert torch.equal(edited[:2], baseline[:2])  # the unconditional half is untouched
    expected = decode_by_hand(unet, torch.cat([h[:2], h[2:] + delta]), block_kwargs)
    torch.testing.assert_close(edited[2:], expected[2:], rtol=0, atol=1e-6)
    assert (edited[2:] - baseline[2:]).abs().max() > 1e-3  # and the edit did something


@pytest.mark.parametrize("editor", ["tiny_pipe", "tiny_sdxl_pipe"], indirect=True)
def test_whole_batch_edit_matches_manual_decoder(editor):
    unet = editor.unet
    inputs = unet_inputs(unet, rows=2, seed=3)
    h, block_kwargs = capture_decoder_inputs(unet, inputs)
    delta = random_delta(unet, seed=4)
    with editor.editing([Constant(delta)]):
        edited = run(unet, inputs)
    torch.testing.assert_close(edited, decode_by_hand(unet, h + delta, block_kwargs), rtol=0, atol=1e-6)


def test_per_row_weights(tiny_pipe, editor):
    unet = tiny_pipe.unet
    inputs = unet_inputs(unet, rows=4, seed=5)
    h, block_kwargs = capture_decoder_inputs(unet, inputs)
    baseline = run(unet, inputs)
    first, second = random_delta(unet, 6), random_delta(unet, 7)
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.4], [0.0, 0.0]])

    editor.set([Constant(first), Constant(second)], weights=weights)
    edited = run(unet, inputs)

    deltas = weights[:, 0].view(4, 1, 1, 1) * first + weights[:, 1].view(4, 1, 1, 1) * second
    torch.testing.assert_close(edited, decode_by_hand(unet, h + deltas, block_kwargs), rtol=0, atol=1e-6)
    assert torch.equal(edited[3], baseline[3])  # the all-zeros row is the base model's own prediction
    assert not torch.allclose(edited[0], edited[1])


def test_per_row_weights_in_cfg_half_mode_address_the_conditional_rows(tiny_pipe, editor):
    unet = tiny_pipe.unet
    inputs = unet_inputs(unet, rows=4, seed=8)
    h, block_kwargs = capture_decoder_inputs(unet, inputs)
    baseline = run(unet, inputs)
    first, second = random_delta(unet, 9), random_delta(unet, 10)

    editor.set([Constant(first), Constant(second)], weights=torch.tensor([[0.0, 1.0], [0.0, 0.0]]), cfg_half=True)
    edited = run(unet, inputs)

    assert torch.equal(edited[:2], baseline[:2])
    assert torch.equal(edited[3], baseline[3])
    expected = decode_by_hand(unet, torch.cat([h[:2], h[2:3] + second, h[3:]]), block_kwargs)
    torch.testing.assert_close(edited[2], expected[2], rtol=0, atol=1e-6)


def test_removing_the_hook_restores_the_unet(tiny_pipe, editor):
    unet = tiny_pipe.unet
    inputs = unet_inputs(unet, rows=2, seed=11)
    editor.remove()
    baseline = run(unet, inputs)

    editor = HSpaceEditor(unet)
    editor.set([Constant(random_delta(unet, 12))])
    assert not torch.equal(run(unet, inputs), baseline)
    editor.remove()

    assert not HSpaceEditor.is_attached(unet)
    assert torch.equal(run(unet, inputs), baseline)


def test_editing_context_restores_the_previous_edit(tiny_pipe, editor):
    outer = Constant(torch.zeros(1, 64, 8, 8))
    editor.set([outer])
    with editor.editing([Constant(torch.ones(1, 64, 8, 8))], cfg_half=True):
        assert editor.current.cfg_half
    assert editor.current.transformations == [outer]
    editor.clear()
    assert editor.current is None


def test_editors_share_one_hook(tiny_pipe, editor):
    again = HSpaceEditor(tiny_pipe.unet)
    assert again._hook is editor._hook  # one hook per UNet


def test_bad_edits_fail_loudly(tiny_pipe, editor):
    with pytest.raises(ValueError, match="weights"):
        editor.set([Constant(torch.zeros(1))], weights=torch.ones(3))
    editor.set([Constant(torch.zeros(1, 64, 8, 8))], weights=torch.ones(3, 1))
    with pytest.raises(ValueError, match="weight rows"):
        run(tiny_pipe.unet, unet_inputs(tiny_pipe.unet, rows=2))
    editor.set([Constant(torch.zeros(1, 64, 8, 8))], cfg_half=True)
    with pytest.raises(ValueError, match="even"):
        run(tiny_pipe.unet, unet_inputs(tiny_pipe.unet, rows=3))
