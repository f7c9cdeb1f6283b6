"""Edits of the UNet bottleneck (h-space): h -> h + delta on the output of `unet.mid_block`.

The edit is attached with diffusers' own hook machinery (`HookRegistry` / `ModelHook`) on the stock
`UNet2DConditionModel`, so one mechanism serves SD 1.x, SD 2.x and SDXL and removing the hook restores the model.

What is added is a weighted sum of transformations, with one weight row per edited image:
    delta_i = sum_k weights[i, k] * transformation_k(h_i)
One-hot rows select a concept per image (fair sampling), 0.6/0.4 rows compose two attributes, rows of ones sum the
safety modules, and a row of zeros leaves an image as the base model makes it.

In `cfg_half` mode the batch is the diffusers classifier-free-guidance batch [unconditional; conditional] and only
the conditional half is edited, as the paper's generation does; in training the whole batch is edited.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from diffusers.hooks import HookRegistry, ModelHook
from torch import nn

HOOK_NAME = "respodiff_hspace_edit"


@dataclass
class HSpaceEdit:
    """What to add to h. `weights` is (rows, K), (K,) for every row alike, or None for all ones."""

    transformations: Sequence[nn.Module]
    weights: torch.Tensor | None = None
    cfg_half: bool = False

    def __post_init__(self) -> None:
        if len(self.transformations) == 0:
            raise ValueError("an HSpaceEdit needs at least one transformation; use clear() for none")
        if self.weights is not None:
            if self.weights.ndim not in (1, 2) or self.weights.shape[-1] != len(self.transformations):
                raise ValueError(
                    f"weights of shape {tuple(self.weights.shape)} do not match "
                    f"{len(self.transformations)} transformations (expected (K,) or (rows, K))"
                )

    def delta(self, h: torch.Tensor) -> torch.Tensor:
        """The sum of weighted transformation outputs for the rows of h."""
        rows = h.shape[0]
        weights = self._row_weights(rows)
        # Decided on the host: testing a GPU tensor would stall every edited UNet call on a device sync.
        used = weights.detach().cpu().any(dim=0).tolist()
        weights = weights.to(device=h.device, dtype=h.dtype)
        total = torch.zeros_like(h)
        for k, transformation in enumerate(self.transformations):
            if not used[k]:
                continue  # skip modules no image in this batch uses (e.g. the other concept)
            total = total + weights[:, k].view(rows, 1, 1, 1) * transformation(h)
        return total

    def _row_weights(self, rows: int) -> torch.Tensor:
        count = len(self.transformations)
        if self.weights is None:
            return torch.ones(rows, count)
        if self.weights.ndim == 1:
            return self.weights.expand(rows, count)
        if self.weights.shape[0] != rows:
            raise ValueError(f"edit has {self.weights.shape[0]} weight rows but the bottleneck batch has {rows} rows")
        return self.weights


class HSpaceHook(ModelHook):
    """Adds the current edit's delta to the mid block's output; does nothing while no edit is set."""

    def __init__(self) -> None:
        super().__init__()
        self.edit: HSpaceEdit | None = None

    def post_forward(self, module: nn.Module, output: torch.Tensor) -> torch.Tensor:
        if self.edit is None:
            return output
        if not self.edit.cfg_half:
            return output + self.edit.delta(output)
        if output.shape[0] % 2:
            raise ValueError(f"cfg_half edit needs an even [uncond; cond] batch, got {output.shape[0]} rows")
        uncond, cond = output.chunk(2)
        return torch.cat([uncond, cond + self.edit.delta(cond)])


class HSpaceEditor:
    """The only way to attach, set, pause, restore and remove an h-space edit on one UNet's mid block.

    Several editors on one UNet share its single hook, so an edit set through one is seen by all. `set`, `clear`,
    `paused` and `editing` are cheap; `editing` and `paused` restore whatever edit was current before them.
    """

    def __init__(self, unet: nn.Module) -> None:
        mid_block = getattr(unet, "mid_block", None)
        if mid_block is None:
            raise TypeError(f"{type(unet).__name__} has no mid_block: h-space edits need a UNet2DConditionModel")
        self.unet = unet
        registry = HookRegistry.check_if_exists_or_initialize(mid_block)
        existing = registry.get_hook(HOOK_NAME)
        self._hook: HSpaceHook = existing if existing is not None else HSpaceHook()
        if existing is None:
            registry.register_hook(self._hook, HOOK_NAME)
        self._registry = registry

    @staticmethod
    def is_attached(unet: nn.Module) -> bool:
        """Whether some editor's hook is on this UNet already (without attaching one)."""
        mid_block = getattr(unet, "mid_block", None)
        registry = getattr(mid_block, "_diffusers_hook", None) if mid_block is not None else None
        return registry is not None and registry.get_hook(HOOK_NAME) is not None

    @property
    def current(self) -> HSpaceEdit | None:
        """The edit applied now (None: the UNet computes as the base model)."""
        return self._hook.edit

    def set(
        self,
        transformations: Sequence[nn.Module],
        weights: torch.Tensor | None = None,
        cfg_half: bool = False,
    ) -> None:
        self._hook.edit = HSpaceEdit(list(transformations), weights, cfg_half)

    def clear(self) -> None:
        self._hook.edit = None

    def remove(self) -> None:
        """Detach the hook: the UNet computes exactly what it did before the editor existed."""
        self.clear()
        if self._registry.get_hook(HOOK_NAME) is not None:
            self._registry.remove_hook(HOOK_NAME, recurse=False)

    @contextmanager
    def restoring(self) -> Iterator[None]:
        """Whatever happens to the edit inside, the edit current on entry is back on exit."""
        previous = self._hook.edit
        try:
            yield
        finally:
            self._hook.edit = previous

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No edit inside (the base model's output, e.g. for training targets); the previous edit after."""
        with self.restoring():
            self.clear()
            yield

    @contextmanager
    def editing(
        self,
        transformations: Sequence[nn.Module],
        weights: torch.Tensor | None = None,
        cfg_half: bool = False,
    ) -> Iterator[None]:
        with self.restoring():
            self.set(transformations, weights, cfg_half)
            yield


def hspace_shape(unet: nn.Module, latent_height: int, latent_width: int | None = None) -> tuple[int, int, int]:
    """(C, H, W) of the mid block's output for latents of the given size.

    Every down block but the last halves the resolution in diffusers' UNet2DConditionModel.
    """
    latent_width = latent_height if latent_width is None else latent_width
    config = unet.config
    downsamples = len(config.down_block_types) - 1
    factor = 2**downsamples
    if latent_height % factor or latent_width % factor:
        raise ValueError(f"latent size {latent_height}x{latent_width} is not divisible by {factor}")
    return (int(config.block_out_channels[-1]), latent_height // factor, latent_width // factor)
