"""Toy tokenizer: CLIP BPE files written by the project; every world word is one token."""

from __future__ import annotations

import json

from transformers import CLIPTokenizer

from respodiff.toyworld.tokenizer import MODEL_MAX_LENGTH, build_tokenizer, write_tokenizer_files
from respodiff.toyworld.world import TRAIN_TEMPLATES, world_words


def test_each_world_word_is_one_token(tmp_path):
    tok = build_tokenizer(tmp_path / "tok")
    ids = set()
    for w in world_words():
        out = tok(w, add_special_tokens=False).input_ids
        assert len(out) == 1, (w, tok.tokenize(w))
        ids.add(out[0])
    assert len(ids) == len(world_words())
    # A full caption: BOS + one token per word + EOS, padded with EOS to the model length.
    enc = tok("Photo of a dark woman doctor", padding="max_length", max_length=MODEL_MAX_LENGTH).input_ids
    assert enc[:8] == [tok.bos_token_id] + [tok.convert_tokens_to_ids(w + "</w>") for w in
                                            "photo of a dark woman doctor".split()] + [tok.eos_token_id]
    assert len(enc) == MODEL_MAX_LENGTH and set(enc[8:]) == {tok.pad_token_id}
    assert all(len(tok(t.format(p="nurse")).input_ids) <= MODEL_MAX_LENGTH for t in TRAIN_TEMPLATES)


def test_unknown_text_still_tokenizes_and_files_are_stable(tmp_path):
    tok = build_tokenizer(tmp_path / "a")
    assert len(tok.tokenize("zebra")) == 5  # byte by byte, nothing lost
    write_tokenizer_files(tmp_path / "b")
    for name in ("vocab.json", "merges.txt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    vocab = json.loads((tmp_path / "a" / "vocab.json").read_text())
    assert "<|startoftext|>" in vocab and "<|endoftext|>" in vocab
    # Round trip through save_pretrained / from_pretrained, as the pipeline folder does.
    tok.save_pretrained(tmp_path / "saved")
    again = CLIPTokenizer.from_pretrained(tmp_path / "saved")
    assert again("a bloody fight").input_ids == tok("a bloody fight").input_ids
    assert again.model_max_length == MODEL_MAX_LENGTH
