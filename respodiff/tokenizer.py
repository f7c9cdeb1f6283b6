"""CLIP tokenizer files written by the project (no download), one token per listed word.

The tiny and toy models need a `CLIPTokenizer` without OpenAI's vocabulary. CLIP's BPE splits a word into
byte-level symbols with "</w>" on the last one, then applies merges by rank. We start from the 256 byte symbols
(so any text still tokenizes, character by character) and append merges until every listed word collapses into a
single symbol. A merge is appended at the lowest priority, so it never changes a word that already works except by
finishing it; we iterate to a fixpoint and check every word at the end.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
_NO_MERGE = 1 << 30


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible byte -> printable unicode map (reimplemented from its definition)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


def _symbols(word: str, byte_map: dict[int, str]) -> list[str]:
    chars = [byte_map[b] for b in word.encode("utf-8")]
    return chars[:-1] + [chars[-1] + "</w>"]


def _bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    symbols = list(symbols)
    while len(symbols) > 1:
        pairs = [(ranks.get((a, b), _NO_MERGE), i) for i, (a, b) in enumerate(zip(symbols, symbols[1:]))]
        best, _ = min(pairs)
        if best == _NO_MERGE:
            break
        pair = next((symbols[i], symbols[i + 1]) for r, i in pairs if r == best)
        merged, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def build_vocab(words: Iterable[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary (bytes, word-final bytes, merged symbols, BOS, EOS) and merges for `words`."""
    words = list(words)
    byte_map = bytes_to_unicode()
    base = list(byte_map.values())
    vocab_list = base + [c + "</w>" for c in base]
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for _ in range(10_000):
        changed = False
        for word in words:
            out = _bpe(_symbols(word, byte_map), ranks)
            if len(out) > 1:
                pair = (out[0], out[1])
                ranks[pair] = len(merges)
                merges.append(pair)
                vocab_list.append(pair[0] + pair[1])
                changed = True
        if not changed:
            break
    for word in words:
        out = _bpe(_symbols(word, byte_map), ranks)
        if out != [word + "</w>"]:
            raise ValueError(f"word {word!r} did not become one token: {out}")
    vocab_list += [BOS, EOS]
    vocab: dict[str, int] = {}
    for token in vocab_list:
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def write_tokenizer_files(folder: str | os.PathLike, words: Iterable[str], header: str = "respodiff") -> Path:
    """Write vocab.json + merges.txt (the files CLIPTokenizer reads) into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab(words)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = [f"#version: 0.2 ({header})"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def write_clip_tokenizer(folder: str | os.PathLike, words: Iterable[str], model_max_length: int = 77) -> Path:
    """The files plus the tokenizer's own config, so `CLIPTokenizer.from_pretrained(folder)` loads it."""
    from transformers import CLIPTokenizer

    folder = write_tokenizer_files(folder, words)
    tokenizer = CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=model_max_length, pad_token=EOS
    )
    tokenizer.save_pretrained(folder)
    return folder


def vocab_size(folder: str | os.PathLike) -> int:
    return len(json.loads((Path(folder) / "vocab.json").read_text()))
