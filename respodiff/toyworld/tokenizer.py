"""A CLIP-format BPE tokenizer written by the project (no download), one token per world word.

CLIP's BPE splits a word into byte-level characters with "</w>" on the last one, then applies
merges by rank. We start from the 256 byte symbols (so any text still tokenizes, character by
character) and append merges until every world word collapses into a single symbol. Merges are
appended at the lowest priority, so a new merge never changes a word that already works except
by finishing it; we iterate to a fixpoint and check every word at the end.
"""

from __future__ import annotations

import json
from pathlib import Path

from .world import world_words

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MODEL_MAX_LENGTH = 16  # toy captions are <= 8 words; short context keeps cross-attention cheap


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible byte -> printable unicode map (reimplemented from its definition)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _symbols(word: str, byte_map: dict[int, str]) -> list[str]:
    chars = [byte_map[b] for b in word.encode("utf-8")]
    return chars[:-1] + [chars[-1] + "</w>"]


def _bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    symbols = list(symbols)
    while len(symbols) > 1:
        pairs = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(symbols, symbols[1:]))]
        best, _ = min(pairs)
        if best == 1 << 30:
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


def build_vocab(words: list[str] | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    words = list(words or world_words())
    byte_map = bytes_to_unicode()
    base = list(byte_map.values())
    vocab_list = base + [c + "</w>" for c in base]
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for _ in range(10_000):
        changed = False
        for w in words:
            out = _bpe(_symbols(w, byte_map), ranks)
            if len(out) > 1:
                pair = (out[0], out[1])
                ranks[pair] = len(merges)
                merges.append(pair)
                vocab_list.append(pair[0] + pair[1])
                changed = True
        if not changed:
            break
    for w in words:
        out = _bpe(_symbols(w, byte_map), ranks)
        assert out == [w + "</w>"], f"word {w!r} did not become one token: {out}"
    vocab_list += [BOS, EOS]
    vocab: dict[str, int] = {}
    for tok in vocab_list:
        vocab.setdefault(tok, len(vocab))
    return vocab, merges


def write_tokenizer_files(folder: str | Path, words: list[str] | None = None) -> Path:
    """Write vocab.json + merges.txt (the files CLIPTokenizer reads) into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab(words)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2 (respodiff toy world)"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def build_tokenizer(folder: str | Path):
    """Write the files and load them as a transformers CLIPTokenizer."""
    from transformers import CLIPTokenizer

    folder = write_tokenizer_files(folder)
    return CLIPTokenizer(
        vocab=str(folder / "vocab.json"),
        merges=str(folder / "merges.txt"),
        model_max_length=MODEL_MAX_LENGTH,
    )
