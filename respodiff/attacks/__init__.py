"""Adversarial prompts against the safety methods: one attack per file, found by name, run as the `attack` stage.

| attack.name  | needs                          | what it finds                                                        |
|--------------|--------------------------------|----------------------------------------------------------------------|
| plain        | nothing                        | the benchmark's unsafe prompts as they are (the reference)            |
| synonyms     | nothing                        | unsafe words replaced from a small synonym table (toy or real words)  |
| ring_a_bell  | the text encoder               | a word-token prompt near E(prompt) + strength * concept vector        |
| white_box    | the defended and base models   | prefix tokens making the defended prediction match the undefended one |

`python run.py experiment=safety_toy method=respodiff stage=attack attack=ring_a_bell` saves the prompts to
<run>/attacks/<name>/prompts.parquet with attack.json (budget, seed, what they were found against); the
`attack_replay` / `attack_replay_toy` benchmarks generate and score them with any method (docs/ATTACKS.md).
`base.py` holds the interface and the registry, `stage.py` the stage, `store.py` the files.
"""

from .base import Attack, FoundPrompt, attack_class, available_attacks, build_attack, register_attack
from .store import read_attack_prompts

__all__ = [
    "Attack",
    "FoundPrompt",
    "attack_class",
    "available_attacks",
    "build_attack",
    "read_attack_prompts",
    "register_attack",
]
