"""Learned h-space transformations and their on-disk format.

Parametrizations (PROTOCOL.md section 1):
- `constant`: a learned C x H x W tensor added to h (the paper's default, "constant functions added linearly").
- `vector`: a learned C-vector broadcast over H x W (CoDSMa's c-vector).
- `mlp`: a per-position two-layer MLP over channels, delta = MLP(h) (paper ablation row).
- `conv`: a 3x3 convolution of h, delta = conv(h) (paper ablation row).

A concept owns one module per part: "ram" and "sam" (RespoDiff), "ram" alone (RAM only, CoDSMa) or "shared"
(one module trained by both losses). A `TransformationSet` holds every concept of one attribute and is saved as
    <folder>/metadata.json
    <folder>/<concept>/<part>/config.json + diffusion_pytorch_model.safetensors
metadata.json records what the modules were trained for (base_model, h_shape, optionally the UNet's class and config
hash) and the sha256 of every module file (`files`); loading checks them. Folders saved before `files` and the
UNet keys existed still load, unchecked on those points.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .errors import CheckpointMismatchError
from .io import canonical_hash, sha256_file, write_json_atomically

PARAMETRIZATIONS = ("constant", "vector", "mlp", "conv")
INITIALISATIONS = ("uniform", "zeros")
PARTS = ("ram", "sam", "shared")
# The public scripts draw each constant from U(-1/sqrt(10), 1/sqrt(10)) rather than starting at zero.
DEFAULT_INIT_SCALE = 1.0 / math.sqrt(10.0)
METADATA_FILE = "metadata.json"


class HSpaceTransform(ModelMixin, ConfigMixin):
    """delta = T(h) for h of shape (B, C, H, W); the result broadcasts against h."""

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        parametrization: str = "constant",
        channels: int = 1280,
        height: int = 8,
        width: int = 8,
        init: str = "uniform",
        init_scale: float = DEFAULT_INIT_SCALE,
        hidden_channels: int = 256,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"unknown parametrization {parametrization!r}; choose one of {PARAMETRIZATIONS}")
        if init not in INITIALISATIONS:
            raise ValueError(f"unknown init {init!r}; choose one of {INITIALISATIONS}")
        generator = torch.Generator().manual_seed(seed)
        if parametrization == "constant":
            self.delta = nn.Parameter(_initial((1, channels, height, width), init, init_scale, generator))
        elif parametrization == "vector":
            self.delta = nn.Parameter(_initial((1, channels, 1, 1), init, init_scale, generator))
        elif parametrization == "mlp":
            self.net = nn.Sequential(
                nn.Conv2d(channels, hidden_channels, 1), nn.SiLU(), nn.Conv2d(hidden_channels, channels, 1)
            )
            _seeded_reset(self.net, generator)
            _init_output_layer(self.net[-1], init, init_scale, generator)
        else:
            self.net = nn.Conv2d(channels, channels, 3, padding=1)
            _seeded_reset(self.net, generator)
            _init_output_layer(self.net, init, init_scale, generator)

    @property
    def h_shape(self) -> tuple[int, int, int]:
        return (self.config.channels, self.config.height, self.config.width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.config.parametrization in ("constant", "vector"):
            return self.delta.to(h.dtype)
        return self.net(h.to(self.net_dtype)).to(h.dtype)

    @property
    def net_dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype


def _initial(shape: tuple[int, ...], init: str, scale: float, generator: torch.Generator) -> torch.Tensor:
    if init == "zeros":
        return torch.zeros(shape)
    return (torch.rand(shape, generator=generator) * 2.0 - 1.0) * scale


def _seeded_reset(module: nn.Module, generator: torch.Generator) -> None:
    """Kaiming-uniform weights from our own generator, so a module's start depends only on its seed."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            bound = 1.0 / math.sqrt(layer.weight[0].numel())
            with torch.no_grad():
                layer.weight.copy_((torch.rand(layer.weight.shape, generator=generator) * 2 - 1) * bound)
                layer.bias.copy_((torch.rand(layer.bias.shape, generator=generator) * 2 - 1) * bound)


def _init_output_layer(layer: nn.Conv2d, init: str, scale: float, generator: torch.Generator) -> None:
    """The output bias plays the constant's role: it gets the configured start; `zeros` zeroes the layer."""
    with torch.no_grad():
        if init == "zeros":
            layer.weight.zero_()
        layer.bias.copy_(_initial(tuple(layer.bias.shape), init, scale, generator))


class SumOfParts(nn.Module):
    """One concept's transformation at inference: the sum of its parts (RAM + SAM)."""

    def __init__(self, parts: Iterable[nn.Module]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        total = self.parts[0](h)
        for part in self.parts[1:]:
            total = total + part(h)
        return total


class TransformationSet:
    """Concept name -> {part name -> HSpaceTransform}, with the metadata that says what they were trained for."""

    def __init__(self, modules: Mapping[str, Mapping[str, HSpaceTransform]], metadata: Mapping[str, Any]):
        if not modules:
            raise ValueError("a TransformationSet needs at least one concept")
        for concept, parts in modules.items():
            unknown = set(parts) - set(PARTS)
            if unknown or not parts:
                raise ValueError(f"concept {concept!r} has parts {sorted(parts)}; allowed parts are {PARTS}")
        self.modules = {concept: dict(parts) for concept, parts in modules.items()}
        self.metadata = dict(metadata)

    @property
    def concepts(self) -> list[str]:
        return list(self.modules)

    def parameters(self) -> Iterable[nn.Parameter]:
        for parts in self.modules.values():
            for module in parts.values():
                yield from module.parameters()

    def to(self, *args: Any, **kwargs: Any) -> TransformationSet:
        for parts in self.modules.values():
            for module in parts.values():
                module.to(*args, **kwargs)
        return self

    def transformation(self, concept: str, parts: Iterable[str] | None = None) -> nn.Module:
        """The concept's inference transformation: the sum of the requested (default: all) parts."""
        if concept not in self.modules:
            raise KeyError(f"unknown concept {concept!r}; these modules know {self.concepts}")
        available = self.modules[concept]
        names = list(available) if parts is None else [p for p in parts if p in available]
        if not names:
            raise KeyError(f"concept {concept!r} has none of the parts {list(parts or [])}")
        if len(names) == 1:
            return available[names[0]]
        return SumOfParts(available[name] for name in names)

    def save(self, folder: str | os.PathLike, unet: nn.Module | None = None) -> Path:
        """Write every module and the metadata; the metadata goes last so its presence marks a complete save.

        unet: the UNet the modules were trained on; its class and config hash are recorded (`unet_record`) so that
        applying them to another architecture is refused. Without it, a record already in the metadata is kept.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files = {}
        for concept, parts in self.modules.items():
            for part, module in parts.items():
                module.save_pretrained(folder / concept / part)
                for path in sorted((folder / concept / part).iterdir()):
                    if path.is_file():
                        files[path.relative_to(folder).as_posix()] = sha256_file(path)
        # JSON objects are written with sorted keys, so the concept order (which fixes e.g. the column of each
        # concept in per-row weights) is stored as a list of its own.
        metadata = {
            **self.metadata,
            **(unet_record(unet) if unet is not None else {}),
            "concepts": {c: sorted(p) for c, p in self.modules.items()},
            "concept_order": self.concepts,
            "files": files,
        }
        write_json_atomically(folder / METADATA_FILE, metadata, sort_keys=True, default=str)
        return folder

    @classmethod
    def load(
        cls,
        folder: str | os.PathLike,
        expected_h_shape: tuple[int, int, int] | None = None,
        expected_base_model: str | None = None,
    ) -> TransformationSet:
        """Load and check that the modules fit the model they are about to edit."""
        folder = Path(folder)
        if not (folder / METADATA_FILE).is_file():
            raise CheckpointMismatchError(
                f"{folder} holds no {METADATA_FILE}: it is not a finished set of h-space modules "
                "(train them first with stage=train)"
            )
        metadata = checked_metadata(folder, expected_h_shape, expected_base_model)
        order = metadata.get("concept_order", list(metadata["concepts"]))
        modules = {
            concept: {
                part: HSpaceTransform.from_pretrained(folder / concept / part)
                for part in metadata["concepts"][concept]
            }
            for concept in order
        }
        return cls(modules, metadata)


def checked_metadata(
    folder: Path, expected_h_shape: tuple[int, int, int] | None, expected_base_model: str | None
) -> dict[str, Any]:
    """A saved set's metadata, checked against the model it is for and its files' sha256, without loading a module."""
    path = folder / METADATA_FILE
    try:
        metadata = json.loads(path.read_text())
    except ValueError as error:
        raise CheckpointMismatchError(f"{path} is not readable JSON ({error}); these are not modules this project "
                                      "wrote, or the file was damaged: retrain into a new folder") from None
    check_compatible(metadata, expected_h_shape, expected_base_model, where=str(folder))
    verify_files(folder, metadata)
    return metadata


def verify_files(folder: Path, metadata: Mapping[str, Any]) -> None:
    """Every module file has the sha256 recorded when it was saved (folders saved before `files` existed pass)."""
    for relative, expected in sorted(dict(metadata.get("files") or {}).items()):
        path = folder / relative
        found = sha256_file(path) if path.is_file() else "a missing file"
        if found != expected:
            raise CheckpointMismatchError(
                f"module file {path} is not the one saved with {folder / METADATA_FILE} (sha256 {expected}, found "
                f"{found}): it was changed or damaged after saving. Train the modules again into a new folder (or "
                "copy the whole folder again); images already generated with the intact modules stay valid"
            )


def unet_record(unet: nn.Module) -> dict[str, Any]:
    """What metadata.json records of the UNet the modules were trained on: its class, public config and the config's
    sha256 (io.canonical_hash; models.ModelSpec.architecture shows the hash's first 12 digits)."""
    config = {key: value for key, value in dict(unet.config).items() if not key.startswith("_")}
    return {
        "unet_class": type(unet).__name__,
        "unet_config": json.loads(json.dumps(config, default=str)),
        "unet_config_sha256": canonical_hash(config),
    }


def check_unet(metadata: Mapping[str, Any], unet: nn.Module, where: str) -> None:
    """Refuse a UNet of another class or config than the recorded one (modules saved without a record pass).

    The recorded config is compared key by key where it is stored, so that a key a newer diffusers adds (with its
    default) is not a mismatch and the message names the keys that differ; else the hash is compared."""
    if "unet_config_sha256" not in metadata and "unet_class" not in metadata:
        return
    here = unet_record(unet)
    differences = []
    if metadata.get("unet_class", here["unet_class"]) != here["unet_class"]:
        differences.append(f"class {metadata['unet_class']} vs {here['unet_class']}")
    saved_config = metadata.get("unet_config")
    if isinstance(saved_config, Mapping):
        differences += [
            f"{key} {saved_config[key]!r} vs {here['unet_config'][key]!r}"
            for key in sorted(set(saved_config) & set(here["unet_config"]))
            if saved_config[key] != here["unet_config"][key]
        ]
    elif metadata.get("unet_config_sha256", here["unet_config_sha256"]) != here["unet_config_sha256"]:
        differences.append(f"config sha256 {metadata['unet_config_sha256']} vs {here['unet_config_sha256']}")
    if differences:
        raise CheckpointMismatchError(
            f"modules in {where} were trained on base model {metadata.get('base_model')!r}, whose UNet differs from "
            f"this pipeline's (modules vs pipeline: {'; '.join(differences[:5])}): use modules trained on this model"
        )


def check_compatible(
    metadata: Mapping[str, Any],
    expected_h_shape: tuple[int, int, int] | None,
    expected_base_model: str | None,
    where: str,
    unet: nn.Module | None = None,
) -> None:
    if unet is not None:
        check_unet(metadata, unet, where)
    saved_shape = tuple(metadata.get("h_shape", ()))
    if expected_h_shape is not None and saved_shape != tuple(expected_h_shape):
        raise CheckpointMismatchError(
            f"modules in {where} were trained for h-space {saved_shape} but this model's bottleneck is "
            f"{tuple(expected_h_shape)}: they belong to another model or resolution"
        )
    saved_base = metadata.get("base_model")
    if expected_base_model is not None and saved_base != expected_base_model:
        raise CheckpointMismatchError(
            f"modules in {where} were trained on base model {saved_base!r}, not {expected_base_model!r}"
        )
