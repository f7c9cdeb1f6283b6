"""Parametrizations of the h-space modules, their initialisation and their on-disk format."""

from __future__ import annotations

import math

import pytest
import torch

from respodiff.errors import CheckpointMismatchError
from respodiff.modules import PARAMETRIZATIONS, HSpaceTransform, TransformationSet

H_SHAPE = (64, 8, 8)
SMALL = dict(channels=64, height=8, width=8, hidden_channels=16)


def public(config) -> dict:
    return {key: value for key, value in config.items() if not key.startswith("_")}


def make_set(parametrization: str) -> TransformationSet:
    modules = {
        "woman": {
            "ram": HSpaceTransform(parametrization, seed=1, **SMALL),
            "sam": HSpaceTransform(parametrization, seed=2, **SMALL),
        },
        "man": {"shared": HSpaceTransform(parametrization, seed=3, **SMALL)},
    }
    return TransformationSet(modules, {"base_model": "tiny", "h_shape": list(H_SHAPE)})


@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
def test_save_and_load_are_bit_identical(tmp_path, parametrization):
    original = make_set(parametrization)
    original.save(tmp_path / "modules")
    loaded = TransformationSet.load(tmp_path / "modules", expected_h_shape=H_SHAPE, expected_base_model="tiny")

    assert loaded.concepts == original.concepts
    h = torch.randn(2, *H_SHAPE, generator=torch.Generator().manual_seed(0))
    for concept, parts in original.modules.items():
        assert set(loaded.modules[concept]) == set(parts)
        for part, module in parts.items():
            twin = loaded.modules[concept][part]
            assert public(twin.config) == public(module.config)
            state, twin_state = module.state_dict(), twin.state_dict()
            assert state.keys() == twin_state.keys()
            assert all(torch.equal(state[key], twin_state[key]) for key in state)
            assert torch.equal(twin(h), module(h))
        assert torch.equal(loaded.transformation(concept)(h), original.transformation(concept)(h))


@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
def test_output_broadcasts_against_h(parametrization):
    module = HSpaceTransform(parametrization, **SMALL)
    h = torch.randn(3, *H_SHAPE)
    assert (h + module(h)).shape == h.shape


@pytest.mark.parametrize("parametrization", ["constant", "vector"])
def test_default_init_is_uniform_within_one_over_sqrt_ten(parametrization):
    bound = 1 / math.sqrt(10)
    module = HSpaceTransform(parametrization, channels=1280, height=8, width=8)
    values = module.delta.detach().flatten()
    assert values.abs().max() <= bound
    # Uniform, not a narrow normal: the range is nearly filled and the mean square is close to bound^2 / 3.
    assert values.max() > 0.95 * bound and values.min() < -0.95 * bound
    assert values.pow(2).mean().item() == pytest.approx(bound**2 / 3, rel=0.1)


@pytest.mark.parametrize("parametrization", ["mlp", "conv"])
def test_network_output_bias_takes_the_configured_start(parametrization):
    module = HSpaceTransform(parametrization, **SMALL)
    bias = module.net[-1].bias if parametrization == "mlp" else module.net.bias
    assert bias.abs().max() <= 1 / math.sqrt(10)
    zero = HSpaceTransform(parametrization, init="zeros", **SMALL)
    assert torch.count_nonzero(zero(torch.randn(1, *H_SHAPE))) == 0


def test_init_depends_only_on_the_seed():
    assert torch.equal(HSpaceTransform(seed=5, **SMALL).delta, HSpaceTransform(seed=5, **SMALL).delta)
    assert not torch.equal(HSpaceTransform(seed=5, **SMALL).delta, HSpaceTransform(seed=6, **SMALL).delta)
    assert torch.count_nonzero(HSpaceTransform(init="zeros", **SMALL).delta) == 0


def test_loading_for_another_h_shape_or_base_model_is_refused(tmp_path):
    make_set("constant").save(tmp_path / "modules")
    with pytest.raises(CheckpointMismatchError, match="h-space"):
        TransformationSet.load(tmp_path / "modules", expected_h_shape=(1280, 8, 8))
    with pytest.raises(CheckpointMismatchError, match="base model"):
        TransformationSet.load(tmp_path / "modules", expected_base_model="CompVis/stable-diffusion-v1-4")
    with pytest.raises(CheckpointMismatchError, match="metadata"):
        TransformationSet.load(tmp_path / "nothing-here")


def test_unknown_parametrization_or_part_is_rejected():
    with pytest.raises(ValueError, match="parametrization"):
        HSpaceTransform("quadratic", **SMALL)
    with pytest.raises(ValueError, match="parts"):
        TransformationSet({"woman": {"extra": HSpaceTransform(**SMALL)}}, {})


def test_transformation_sums_the_requested_parts():
    modules = make_set("constant")
    h = torch.zeros(1, *H_SHAPE)
    ram, sam = modules.modules["woman"]["ram"], modules.modules["woman"]["sam"]
    torch.testing.assert_close(modules.transformation("woman")(h), ram(h) + sam(h), rtol=0, atol=0)
    assert modules.transformation("woman", parts=["ram"]) is ram
