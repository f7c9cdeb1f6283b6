"""Erased Stable Diffusion (Gandikota et al., ICCV 2023): a published fine-tuned UNet swapped into the base model.

ESD is not retrained here: the user points `method.weights` at a released ESD UNet file and the run loads it into
the already-loaded base pipeline, so ESD samples with the same VAE, text encoder, sampler and seeds as every other
row. The file is checked against the base UNet's keys and shapes before any image is generated.

Formats (both appear among the published ESD checkpoints):
- `.safetensors`, or `.pt` / `.pth` / `.ckpt` / `.bin` read with `torch.load(weights_only=True)` (a file that needs
  arbitrary unpickling is refused, never executed);
- diffusers key names (`conv_in.weight`, `down_blocks.0.resnets.0.conv1.weight`, ...), or original-SD (ldm) names
  (`model.diffusion_model.input_blocks.0.0.weight`, with or without the `model.diffusion_model.` prefix, possibly
  inside a Lightning `state_dict`), converted with diffusers' own single-file conversion.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointMismatchError, ConfigError, MissingAssetError
from ..io import sha256_file
from .base import Method, register_method

log = logging.getLogger(__name__)

TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
SUFFIXES = (*TORCH_SUFFIXES, ".safetensors")
LDM_PREFIX = "model.diffusion_model."
# Top-level module names of the original-SD UNet (openaimodel.UNetModel).
LDM_UNET_ROOTS = ("input_blocks.", "middle_block.", "output_blocks.", "time_embed.", "out.")
FORMAT_HELP = (
    "expected a UNet state dict with diffusers key names (e.g. 'conv_in.weight', "
    "'down_blocks.0.resnets.0.conv1.weight') or original-SD (ldm) names (e.g. "
    "'model.diffusion_model.input_blocks.0.0.weight')"
)
EXAMPLES = 5  # keys named per kind of mismatch


def weights_path(method: Mapping[str, Any]) -> Path:
    """`method.weights` as a path; refused when unset or of an unknown kind (cheap: config validation)."""
    weights = method.get("weights")
    if not weights:
        raise MissingAssetError(
            "method=esd needs the published ESD UNet weights: pass method.weights=<path to .pt/.ckpt/.safetensors> "
            "(e.g. a diffusers-format 'ESD-u nudity' UNet file from the ESD authors' release)"
        )
    path = Path(str(weights)).expanduser()
    if path.suffix.lower() not in SUFFIXES:
        raise ConfigError(f"method.weights {path} has suffix {path.suffix!r}; ESD weights must be one of {SUFFIXES}")
    return path


def check_assets(method: Mapping[str, Any]) -> None:
    path = weights_path(method)
    if not path.is_file():
        raise MissingAssetError(f"ESD weights file {path} (method.weights) does not exist")


def read_state_dict(path: Path, header_only: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, on the CPU; a Lightning checkpoint's `state_dict` is unwrapped.

    `header_only`: names and shapes only, as tensors on the meta device (a safetensors header, or a torch zip file
    memory-mapped), so the file can be checked against the base model before anything is loaded.
    """
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        if header_only:
            with safe_open(str(path), framework="pt") as handle:
                loaded: Any = {key: torch.empty(handle.get_slice(key).get_shape(), device="meta")
                               for key in handle.keys()}
        else:
            loaded = load_file(str(path), device="cpu")
    else:
        try:
            loaded = _torch_load(path, header_only)
        except Exception as failure:  # noqa: BLE001 - any unpickling refusal or corrupt file: say which file
            raise CheckpointMismatchError(
                f"ESD weights {path} cannot be read as plain tensors with torch.load(weights_only=True) "
                f"({type(failure).__name__}: {failure}); {FORMAT_HELP}, saved with torch.save or safetensors"
            ) from failure
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping):
        raise CheckpointMismatchError(f"ESD weights {path} hold a {type(loaded).__name__}, not a state dict; {FORMAT_HELP}")
    tensors = {str(key): value for key, value in loaded.items() if isinstance(value, torch.Tensor)}
    if header_only:
        tensors = {key: torch.empty(value.shape, device="meta") for key, value in tensors.items()}
    if not tensors:
        raise CheckpointMismatchError(f"ESD weights {path} hold no tensors; {FORMAT_HELP}")
    return tensors


def _torch_load(path: Path, header_only: bool) -> Any:
    """torch.load(weights_only=True); for a header check memory-mapped where the file's format allows it (the zip
    format of current torch.save), so only the names and shapes are read."""
    if header_only:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            pass  # a legacy (non-zip) file cannot be mapped: read it whole
    return torch.load(path, map_location="cpu", weights_only=True)


def key_format(state: Mapping[str, torch.Tensor]) -> str:
    """'ldm' (original-SD names, with or without the model.diffusion_model. prefix) or 'diffusers'."""
    if any(key.startswith(LDM_PREFIX) for key in state):
        return "ldm"
    if any(key.startswith(("input_blocks.", "middle_block.", "output_blocks.")) for key in state):
        return "ldm"
    return "diffusers"


def to_diffusers_names(state: dict[str, torch.Tensor], unet_config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """An ldm-named UNet state dict renamed to diffusers' names with diffusers' own converter."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    if not any(key.startswith(LDM_PREFIX) for key in state):
        # A bare UNetModel state dict: give it the prefix the converter looks for (and drop anything else).
        state = {LDM_PREFIX + key: value for key, value in state.items() if key.startswith(LDM_UNET_ROOTS)}
    try:
        converted = convert_ldm_unet_checkpoint(state, dict(unet_config))
    except (KeyError, IndexError, ValueError) as failure:
        raise CheckpointMismatchError(
            f"the ldm-named ESD weights could not be converted to diffusers names ({type(failure).__name__}: "
            f"{failure}); they do not match this model's UNet layout"
        ) from failure
    # The converter looks names up with .get(): a layer the file lacks comes back as None, i.e. missing.
    return {key: value for key, value in converted.items() if value is not None}


def mismatch_report(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Size], partial: bool) -> str | None:
    """None when `state` fits `expected` (key -> shape); otherwise what does not fit, with a few names each."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{key}: file {tuple(state[key].shape)} vs model {tuple(expected[key])}"
        for key in sorted(set(state) & set(expected))
        if tuple(state[key].shape) != tuple(expected[key])
    ]
    problems = []
    if missing and not partial:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:EXAMPLES])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:EXAMPLES])})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:EXAMPLES])})")
    return "; ".join(problems) or None


def check_against_config(method: Mapping[str, Any], unet_config: Mapping[str, Any]) -> None:
    """The file's key names and shapes against a UNet built from the base model's config on the meta device: a
    file for another architecture is refused before any model or weight is loaded."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(dict(unet_config))
    _fitting_state(weights_path(method), unet, bool(method.get("partial", False)), header_only=True)


def _fitting_state(path: Path, unet, partial: bool, header_only: bool = False) -> tuple[dict[str, torch.Tensor], str]:
    """(state in diffusers names, key format) of the file, or CheckpointMismatchError saying what does not fit."""
    state = read_state_dict(path, header_only=header_only)
    fmt = key_format(state)
    if fmt == "ldm":
        state = to_diffusers_names(state, unet.config)
    expected = {key: value.shape for key, value in unet.state_dict().items()}
    report = mismatch_report(state, expected, partial)
    if report is not None:
        raise CheckpointMismatchError(
            f"ESD weights {path} (read as {fmt} key names) do not fit the base model's UNet: {report}. "
            f"They belong to another model or format; {FORMAT_HELP}, for a UNet with the base model's "
            f"architecture{'' if partial else ' (method.partial=true accepts files that leave keys out)'}."
        )
    return state, fmt


def load_esd_weights(unet, method: Mapping[str, Any]) -> str:
    """Check `method.weights` against `unet` and load them into it; return the file's sha256.

    With `method.partial: true` a file may leave keys out (they keep the base model's weights: some releases save
    only the fine-tuned cross-attention layers); unexpected keys and wrong shapes are always refused.
    """
    check_assets(method)
    path = weights_path(method)
    partial = bool(method.get("partial", False))
    state, fmt = _fitting_state(path, unet, partial)
    unet.load_state_dict(state, strict=not partial)
    digest = weights_digest(path)
    log.info("ESD: loaded %d UNet tensors (%s names) from %s (sha256 %s)", len(state), fmt, path, digest[:16])
    return digest


@functools.lru_cache(maxsize=8)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)  # size and mtime only key the cache: a rewritten file is hashed again


def weights_digest(path: str | Path) -> str:
    """sha256 of the weights file (computed once per file version and process: SD UNets are GBs)."""
    stat = Path(path).stat()
    return _digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def esd_model_identity(base_identity: str, method: Mapping[str, Any]) -> str:
    """What image stores name an ESD model by: the base model plus the weights' digest."""
    return f"{base_identity}+esd:{weights_digest(weights_path(method))[:16]}"


@register_method
class ESDMethod(Method):
    kind = "esd"
    keys = frozenset({"weights", "partial"})

    def validate(self, arch: str) -> None:
        if self.options.get("weights"):
            weights_path(self.options)  # the suffix; existence is an asset check

    def check_assets(self) -> None:
        from ..models import ModelSpec

        check_assets(self.options)
        model = self.cfg.get("model")
        unet_config = ModelSpec.from_config(model).unet_config() if model else None
        if unet_config is not None:  # else the same check runs when the weights are loaded into the UNet
            check_against_config(self.options, unet_config)

    def prepare_pipeline(self, pipe):
        load_esd_weights(pipe.unet, self.options)
        return pipe

    def generation_options(self, model_identity: str) -> dict[str, Any]:
        # Base and ESD images never share a store: the identity carries the weights' digest.
        return {"model_identity": esd_model_identity(model_identity, self.options)}
