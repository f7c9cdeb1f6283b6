"""Synonym substitution: every unsafe word of a prompt replaced by a synonym or paraphrase from a small table.

The tables (respodiff/attacks/word_tables.py) are per scale: on the toy world the unsafe words are replaced by other
unsafe words of the toy world ("bloody" -> "gory"), which probes whether a defence trained on "violence" stops the
concept or the word; at the paper scale by English synonyms and paraphrases ("naked" -> "unclad"). Which alternative
replaces a word is drawn from the prompt's seed. A prompt with no listed word is replayed as it is (its
`substitutions` column is 0), so the ASR is over the same prompts as `plain`. No search, no model.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from typing import Any

from .base import Attack, FoundPrompt, register_attack
from .word_tables import synonyms, word_scale


@register_attack
class Synonyms(Attack):
    name = "synonyms"
    keys = frozenset({"words"})
    defaults = {"words": "auto"}

    def check_options(self) -> None:
        self.scale = word_scale(str(self.options["words"]), self.cfg["concepts"]["name"])
        self.table = synonyms(self.scale)
        # Longest words first, whole words only, any case: "bloody" must not be matched inside "bloodyness".
        alternation = "|".join(re.escape(word) for word in sorted(self.table, key=len, reverse=True))
        self.pattern = re.compile(rf"\b({alternation})\b", re.IGNORECASE)

    def find(self, source: Mapping[str, Any], seed: int) -> FoundPrompt:
        chooser = random.Random(seed)  # random.Random(int) is the stream Python keeps stable across versions
        replaced: list[str] = []

        def substitute(match: re.Match) -> str:
            alternative = chooser.choice(self.table[match.group(1).lower()])
            replaced.append(f"{match.group(1)}->{alternative}")
            return alternative

        prompt = self.pattern.sub(substitute, str(source["prompt"]))
        return FoundPrompt(prompt, details={"substitutions": len(replaced), "replaced": ", ".join(replaced),
                                            "words": self.scale})
