"""CLIP tokenizer files written by the project.

The tiny and toy models need a `CLIPTokenizer` without downloading OpenAI's vocabulary. CLIP's format is byte-level
BPE: every byte as a symbol, every byte as a word-final symbol ("</w>"), the merged symbols, then the two special
tokens. We add merges that spell out the given words left to right, so frequent words become few tokens; any other
text still tokenizes losslessly, byte by byte.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from transformers import CLIPTokenizer

START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"


@lru_cache(maxsize=1)
def _byte_symbols() -> list[str]:
    """CLIP's printable stand-ins for the 256 byte values: printable bytes map to themselves, the rest to 256+."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    others = [byte for byte in range(256) if byte not in printable]
    codes += [256 + i for i in range(len(others))]
    return [chr(code) for code in codes]


def _word_merges(word: str) -> list[tuple[str, str]]:
    symbols = [*word[:-1], word[-1] + "</w>"]
    merges = []
    merged = symbols[0]
    for symbol in symbols[1:]:
        merges.append((merged, symbol))
        merged += symbol
    return merges


def write_clip_tokenizer(folder: str | os.PathLike, words: Iterable[str], model_max_length: int = 77) -> Path:
    """Write vocab.json + merges.txt (+ the tokenizer's own config) for the given lower-case words."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    symbols = _byte_symbols()
    vocab: dict[str, int] = {}
    for token in [*symbols, *(s + "</w>" for s in symbols)]:
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    # Longer words first: their merges outrank those of words they contain ("woman" before "man").
    for word in sorted({w.lower() for w in words if w}, key=lambda w: (-len(w), w)):
        if not all(ord(c) < 128 and c.isprintable() and not c.isspace() for c in word):
            raise ValueError(f"tokenizer words must be printable ASCII without spaces, got {word!r}")
        for pair in _word_merges(word):
            if pair not in merges:
                merges.append(pair)
                vocab.setdefault("".join(pair), len(vocab))
    vocab[START_TOKEN] = len(vocab)
    vocab[END_TOKEN] = len(vocab)
    vocab_file = folder / "vocab.json"
    merges_file = folder / "merges.txt"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False))
    merges_file.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    tokenizer = CLIPTokenizer(
        str(vocab_file), str(merges_file), model_max_length=model_max_length, pad_token=END_TOKEN
    )
    tokenizer.save_pretrained(folder)
    return folder


def vocab_size(folder: str | os.PathLike) -> int:
    return len(json.loads((Path(folder) / "vocab.json").read_text()))
