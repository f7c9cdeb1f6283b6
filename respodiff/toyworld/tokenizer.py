"""The toy world's tokenizer: the project's CLIP-format BPE (respodiff.tokenizer) over the world's words."""

from __future__ import annotations

from pathlib import Path

from respodiff.tokenizer import BOS, EOS, build_vocab  # noqa: F401  (re-exported for the toy world's users)
from respodiff.tokenizer import write_tokenizer_files as _write_files

from .world import world_words

MODEL_MAX_LENGTH = 16  # toy captions are <= 8 words; short context keeps cross-attention cheap


def write_tokenizer_files(folder: str | Path, words: list[str] | None = None) -> Path:
    """Write vocab.json + merges.txt for the world's words (or `words`) into `folder`."""
    return _write_files(folder, words or world_words(), header="respodiff toy world")


def build_tokenizer(folder: str | Path):
    """Write the files and load them as a transformers CLIPTokenizer."""
    from transformers import CLIPTokenizer

    folder = write_tokenizer_files(folder)
    return CLIPTokenizer(
        vocab=str(folder / "vocab.json"),
        merges=str(folder / "merges.txt"),
        model_max_length=MODEL_MAX_LENGTH,
    )
