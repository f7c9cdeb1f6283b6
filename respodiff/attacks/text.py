"""The text side of a Stable Diffusion pipeline as the attacks see it.

A prompt conditions the UNet through the text encoder's last hidden state over `model_max_length` positions
(BOS, the prompt's tokens, EOS, padding), exactly as the pipeline encodes it. The discrete searches draw tokens from
the "word tokens" of the vocabulary: tokens that decode to one lowercase word and re-tokenize to themselves, so a
found token sequence written out as words ("gory murder scene ...") is the prompt that was scored, not an
approximation of it (byte fragments and punctuation would re-tokenize differently).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cached_property

import torch

_WORD = re.compile(r"[a-z][a-z'\-]*")


class TextSpace:
    """Token ids and text embeddings of one tokenizer + text encoder, on the encoder's device."""

    def __init__(self, tokenizer, text_encoder) -> None:
        self.tokenizer = tokenizer
        self.encoder = text_encoder
        self.length = int(tokenizer.model_max_length)
        self.bos = int(tokenizer.bos_token_id)
        self.eos = int(tokenizer.eos_token_id)
        self.pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    def tokens(self, prompt: str) -> list[int]:
        """The prompt's token ids without BOS/EOS, as the pipeline's tokenizer call splits it."""
        return list(self.tokenizer(prompt, add_special_tokens=False).input_ids)

    def ids(self, token_lists: Sequence[Sequence[int]]) -> torch.Tensor:
        """(B, length) ids: BOS, the tokens (truncated as the pipeline truncates), EOS, padding."""
        rows = []
        for tokens in token_lists:
            body = [int(t) for t in tokens][: self.length - 2]
            row = [self.bos, *body, self.eos]
            rows.append(row + [self.pad] * (self.length - len(row)))
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    def embed_ids(self, ids: torch.Tensor, offset: torch.Tensor | None = None,
                  positions: Sequence[int] = ()) -> torch.Tensor:
        """The encoder's last hidden state (B, length, D) for `ids`; with `offset` (len(positions), D) added to the
        token embeddings at `positions`, so a loss can be differentiated with respect to those embeddings."""
        if offset is None:
            return self.encoder(ids)[0]
        layer = self.encoder.get_input_embeddings()
        index = torch.tensor(list(positions), device=ids.device)

        def add_offset(module, inputs, output):
            shift = torch.zeros_like(output)
            shift[:, index] = offset.to(output.dtype)
            return output + shift

        handle = layer.register_forward_hook(add_offset)
        try:
            return self.encoder(ids)[0]
        finally:
            handle.remove()

    @torch.no_grad()
    def embed(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.embed_ids(self.ids([self.tokens(p) for p in prompts]))

    @cached_property
    def word_tokens(self) -> tuple[torch.Tensor, list[str]]:
        """(ids, words) of the vocabulary's word tokens (see the module docstring), in id order."""
        vocabulary = len(self.tokenizer)
        texts = [self.tokenizer.decode([i]) for i in range(vocabulary)]
        candidates = [i for i, text in enumerate(texts) if _WORD.fullmatch(text)]
        encoded = self.tokenizer([texts[i] for i in candidates], add_special_tokens=False).input_ids
        kept = [i for i, again in zip(candidates, encoded) if list(again) == [i]]
        if not kept:
            raise ValueError("the tokenizer has no token that decodes to a word and re-tokenizes to itself")
        return torch.tensor(kept, dtype=torch.long), [texts[i] for i in kept]

    def text_of(self, tokens: Sequence[int]) -> str:
        """Word tokens written out as the prompt they stand for."""
        return " ".join(self.tokenizer.decode([int(t)]) for t in tokens)

    def token_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        """The encoder's input embeddings of `ids` (float32, detached)."""
        return self.encoder.get_input_embeddings().weight[ids.to(self.device)].detach().float()
