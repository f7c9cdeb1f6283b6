"""Numerics shared by every training loop: the autocast policy, the latent size of an h-space shape, and the Adam
step (with fp16 loss scaling), so RespoDiff's modules and SDisc's vectors train alike."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch

from ..errors import ConfigError
from ..hspace import hspace_shape


def autocast_dtype(precision: str, device: torch.device, unet_dtype: torch.dtype) -> torch.dtype | None:
    """None = no autocast. CPU trains in fp32 unless bf16 is asked for; CUDA autocasts the UNet to half precision by
    default. Modules and optimiser state stay fp32 either way."""
    if device.type != "cuda":
        if precision in ("auto", "fp32"):
            return None
        if precision == "bf16" and device.type == "cpu":
            # Pays only on CPUs with bf16 instructions (AVX512-BF16, AMX); results/speed records where it was measured.
            return torch.bfloat16
        raise ConfigError(f"train.precision={precision} needs a CUDA device; on {device.type} use fp32, auto or bf16")
    if precision == "fp32":
        return None
    if precision == "auto":
        # Follow fp16 weights rather than recasting them to bf16 on every call; otherwise prefer bf16's range.
        if unet_dtype == torch.float16 or not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16
    return torch.bfloat16 if precision == "bf16" else torch.float16


TRAINED_COMPONENTS = ("unet", "text_encoder", "text_encoder_2")


@contextmanager
def training_weights(pipe, precision: str) -> Iterator[None]:
    """`fp32` trains in full fp32 as the public scripts do (no mixed precision): components the pipeline holds in
    half precision (model.dtype auto loads fp16 on a GPU) are upcast for training and cast back afterwards, which is
    lossless (every fp16 / bf16 value is exact in fp32). Other precisions leave the weights as loaded."""
    restore = {}
    if precision == "fp32":
        for name in TRAINED_COMPONENTS:
            component = getattr(pipe, name, None)
            if component is not None and component.dtype != torch.float32:
                restore[name] = component.dtype
                component.to(torch.float32)
    try:
        yield
    finally:
        for name, dtype in restore.items():
            getattr(pipe, name).to(dtype)


def latent_size(unet, h_shape: Sequence[int]) -> tuple[int, int]:
    """The latent size whose bottleneck has `h_shape`; the modules are built for exactly that shape."""
    if len(h_shape) != 3:
        raise ConfigError(f"h_shape must be (C, H, W), got {tuple(h_shape)}")
    factor = 2 ** (len(unet.config.down_block_types) - 1)
    size = (int(h_shape[1]) * factor, int(h_shape[2]) * factor)
    if hspace_shape(unet, *size) != tuple(int(x) for x in h_shape):
        raise ConfigError(
            f"h_shape {tuple(h_shape)} does not fit this UNet: its bottleneck at latent size {size} is "
            f"{hspace_shape(unet, *size)}"
        )
    return size


def adam(parameters: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """The optimiser of every learned module (the public scripts' Adam settings, written out)."""
    return torch.optim.Adam(parameters, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)


class MixedPrecision:
    """Autocast and optimiser steps under one autocast dtype (None: fp32, no autocast).

    fp16 gradients underflow without loss scaling, so fp16 gets a GradScaler; bf16 and fp32 need none. One instance
    per learned concept: the loss scale is part of that concept's resumable state.
    """

    def __init__(self, device: torch.device, dtype: torch.dtype | None) -> None:
        self.device_type = device.type
        self.dtype = dtype
        self.scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None

    def autocast(self) -> AbstractContextManager:
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """Backpropagate `loss` and step `optimizer` alone."""
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
        # set_to_none keeps the other part's grads None: each optimiser only ever sees its own loss's gradient.
        optimizer.zero_grad(set_to_none=True)

    def update(self) -> None:
        """Once per iteration, after all of its steps: adapts the fp16 loss scale."""
        if self.scaler is not None:
            self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
