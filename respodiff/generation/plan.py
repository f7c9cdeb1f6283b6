"""What to generate: sampler settings, concept plans and the manifest (one row per image).

The manifest fixes everything that determines an image before any model runs: prompt, negative prompt, seed,
concept weights, sampler settings and the file it is saved to (its suffix is the image format). Seeds depend only on
the benchmark's prompts and the sample index, never on the model or method, so the base model and every method
render image i from the same noise and their grids compare like with like. Two seed schemes:
- hashed: stable_seed(benchmark, prompt id, sample index), independent of the prompt table's order;
- protocol: the image's position in the manifest, as the public scripts seed (PROTOCOL.md section 4): COCO seed =
  caption index, I2P seed = 5 * prompt index + sample index.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

from ..errors import ConfigError
from ..io import short_hash
from ..seeding import stable_seed

PLAN_MODES = ("none", "fair", "sum", "compose", "compose_cycle")
SAMPLINGS = ("balanced", "uniform")
SEED_SCHEMES = ("hashed", "protocol")
# png: lossless (the project's default; existing stores are PNG) | jpeg75: PIL's default JPEG quality 75, what the
# public scripts save (`image.save("<i>.jpg")`).
IMAGE_FORMATS = {"png": ".png", "jpeg75": ".jpg"}
# The columns generate() owns; a prompt table may add any others as metadata.
MANIFEST_COLUMNS = (
    "image_id",
    "benchmark",
    "prompt_id",
    "prompt",
    "negative_prompt",
    "sample_index",
    "seed",
    "concept",
    "concept_weights",
    "steps",
    "guidance_scale",
    "eta",
    "height",
    "width",
    "status",
    "path",
)
# The columns that decide an image's pixels: a store is bound to exactly these (metadata may change freely).
IMAGE_DEFINING_COLUMNS = (
    "image_id",
    "prompt",
    "negative_prompt",
    "seed",
    "concept_weights",
    "steps",
    "guidance_scale",
    "eta",
    "height",
    "width",
    "path",
)
PENDING, DONE = "pending", "done"


@dataclass
class SamplerSettings:
    """The diffusers pipeline call's settings. `batch_size` changes speed only, never an image."""

    steps: int = 50
    guidance_scale: float = 7.5
    height: int = 512
    width: int = 512
    batch_size: int = 8
    eta: float = 0.0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"sampler.steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ConfigError(f"sampler.batch_size must be >= 1, got {self.batch_size}")
        if self.height <= 0 or self.width <= 0 or self.height % 8 or self.width % 8:
            raise ConfigError(f"image size {self.height}x{self.width} must be positive multiples of 8")
        if not 0.0 <= self.eta <= 1.0:
            raise ConfigError(f"sampler.eta must lie in [0, 1], got {self.eta}")

    def image_settings(self) -> dict[str, float | int]:
        """The settings that shape an image (everything but batch size)."""
        return dict(
            steps=int(self.steps),
            guidance_scale=float(self.guidance_scale),
            eta=float(self.eta),
            height=int(self.height),
            width=int(self.width),
        )


@dataclass
class ConceptPlan:
    """Which transformation each image gets.

    - none: the base model (weights {}).
    - fair: one concept per image; `balanced` cycles through the concepts in manifest order (with a per-prompt
      sample count that is a multiple of the concept count this is the public scripts' sample_index % n),
      `uniform` draws one per image from a generator seeded by the image's seed (the paper's description).
    - sum: every concept with weight 1 (the safety transformation = anti-violence + anti-sexual).
    - compose: the fixed weights given, e.g. {"gender/woman": 0.6, "race/black": 0.4}.
    - compose_cycle: the weight sets in `cycle` in turn, `per_weights` consecutive images each, restarting with
      every prompt (the per-prompt sample count must be a multiple of len(cycle) * per_weights;
      `ConceptPlan.cycle_over`, or a concept set's `compose_cycle` block through `compose_cycle_plan`).
    Module keys are concept names of one TransformationSet, or "<set>/<concept>" when generate() is given several.
    """

    mode: str = "none"
    concepts: list[str] = field(default_factory=list)
    sampling: str = "balanced"
    weights: dict[str, float] = field(default_factory=dict)
    label: str | None = None
    cycle: list[dict[str, float]] = field(default_factory=list)
    per_weights: int = 1

    def __post_init__(self) -> None:
        if self.mode not in PLAN_MODES:
            raise ConfigError(f"concept plan mode {self.mode!r} is not one of {PLAN_MODES}")
        if self.sampling not in SAMPLINGS:
            raise ConfigError(f"concept sampling {self.sampling!r} is not one of {SAMPLINGS}")
        self.concepts = [str(c) for c in self.concepts]
        self.weights = {str(k): float(v) for k, v in dict(self.weights or {}).items()}
        if self.mode in ("fair", "sum") and not self.concepts:
            raise ConfigError(f"concept plan {self.mode!r} needs at least one concept")
        if len(set(self.concepts)) != len(self.concepts):
            raise ConfigError(f"concept plan lists a concept twice: {self.concepts}")
        if self.mode == "compose" and not self.weights:
            raise ConfigError(
                "concept plan 'compose' needs weights, e.g. {'gender/woman': 0.6, 'race/black': 0.4}"
            )
        self.cycle = [{str(k): float(v) for k, v in dict(weights).items()} for weights in self.cycle]
        if self.mode == "compose_cycle" and (not self.cycle or not all(self.cycle)):
            raise ConfigError("concept plan 'compose_cycle' needs a non-empty list of non-empty weight sets")
        if not isinstance(self.per_weights, int) or self.per_weights < 1:
            raise ConfigError(f"concept plan per_weights must be an integer >= 1, got {self.per_weights!r}")

    @classmethod
    def cycle_over(cls, groups: list[list[str]], weights: list[float], per_weights: int) -> ConceptPlan:
        """Every combination of one concept per group, weighted per group, `per_weights` images each, in
        itertools.product order. The public composition script: groups [[gender/woman, gender/man],
        [race/black, race/white, race/asian]], weights [0.6, 0.4], 5 images each: 6 pairs, 30 images per prompt."""
        if len(groups) != len(weights) or not all(groups):
            raise ConfigError(f"compose_cycle needs one weight per non-empty concept group, got {groups} / {weights}")
        combinations = [dict(zip(chosen, weights)) for chosen in itertools.product(*groups)]
        return cls(mode="compose_cycle", cycle=combinations, per_weights=per_weights)

    @property
    def samples_per_round(self) -> int:
        """Images one full round of the plan takes (a per-prompt sample count must be a multiple of it)."""
        return len(self.cycle) * self.per_weights if self.mode == "compose_cycle" else 1

    def check_samples_per_prompt(self, benchmark: str, samples_per_prompt: int) -> None:
        """Refuse a per-prompt image count that cuts a round: every prompt must get every weight set equally
        often (the public composition script: 6 pairs x 5 images = 30 per prompt)."""
        if samples_per_prompt % self.samples_per_round:
            raise ConfigError(
                f"{benchmark} renders {samples_per_prompt} images per prompt, but the concept plan "
                f"({self.mode}: {len(self.cycle)} weight sets x {self.per_weights} images) takes "
                f"{self.samples_per_round} per round; choose the benchmark's images so that each prompt gets a "
                f"multiple of {self.samples_per_round} (winobias: eval.winobias.images_per_concept x the number of "
                "concepts)"
            )

    def assign(self, ordinal: int, seed: int) -> tuple[str, dict[str, float]]:
        """(concept label, {module key: weight}) of the image at manifest position `ordinal` with `seed`."""
        if self.mode == "none":
            return self.label or "none", {}
        if self.mode == "sum":
            return self.label or "sum", {concept: 1.0 for concept in self.concepts}
        if self.mode == "compose":
            return self.label or "+".join(self.weights), dict(self.weights)
        if self.mode == "compose_cycle":
            weights = self.cycle[(ordinal // self.per_weights) % len(self.cycle)]
            return "+".join(weights), dict(weights)
        count = len(self.concepts)
        if self.sampling == "balanced":
            index = ordinal % count
        else:
            # random.Random(int).random() is the one stream Python promises to keep across versions.
            index = min(int(random.Random(seed).random() * count), count - 1)
        concept = self.concepts[index]
        return concept, {concept: 1.0}


def compose_cycle_plan(block: Mapping, concept_names: list[str], where: str = "concepts.compose_cycle"
                       ) -> ConceptPlan:
    """The plan of a concept set's `compose_cycle` block: {groups: [[woman, man], [black, white, asian]],
    weights: [0.6, 0.4], per_weights: 5} cycles over every combination of one concept per group, checked against
    the set's concept names with errors naming the key."""
    if not isinstance(block, Mapping):
        raise ConfigError(f"{where} must be a block with groups, weights and per_weights, got {block!r}")
    unknown = sorted(set(block) - {"groups", "weights", "per_weights"})
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(f'{where}.{k}' for k in unknown)}; {where} takes groups, "
                          "weights and per_weights")
    groups = [[str(name) for name in group] for group in block.get("groups") or []]
    weights = list(block.get("weights") or [])
    per_weights = block.get("per_weights", 1)
    named = [name for group in groups for name in group]
    strangers = [name for name in named if name not in concept_names]
    if strangers:
        raise ConfigError(f"{where}.groups names {strangers}, which are not concepts of this set {concept_names}")
    if len(set(named)) != len(named):
        raise ConfigError(f"{where}.groups lists a concept twice: {groups}")
    if len(groups) < 2:
        raise ConfigError(f"{where}.groups needs at least two groups to compose, got {groups}")
    if len(weights) != len(groups):
        raise ConfigError(f"{where}.weights needs one weight per group ({len(groups)}), got {weights}")
    if any(isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0 for w in weights):
        raise ConfigError(f"{where}.weights must be numbers >= 0, got {weights}")
    if isinstance(per_weights, bool) or not isinstance(per_weights, int) or per_weights < 1:
        raise ConfigError(f"{where}.per_weights must be an integer >= 1, got {per_weights!r}")
    return ConceptPlan.cycle_over(groups, [float(w) for w in weights], per_weights)


def build_manifest(
    benchmark: str,
    prompt_table: pd.DataFrame,
    samples_per_prompt: int,
    plan: ConceptPlan,
    sampler: SamplerSettings,
    negative_prompt: str = "",
    seed_scheme: str = "hashed",
    image_format: str = "png",
) -> pd.DataFrame:
    """One pending row per (prompt, sample index), in prompt-table order; columns as in docs/CONTRACTS.md."""
    if samples_per_prompt < 1:
        raise ConfigError(f"samples_per_prompt must be >= 1, got {samples_per_prompt}")
    plan.check_samples_per_prompt(benchmark, samples_per_prompt)
    if seed_scheme not in SEED_SCHEMES:
        raise ConfigError(f"eval.seed_scheme {seed_scheme!r} is not one of {SEED_SCHEMES}")
    if image_format not in IMAGE_FORMATS:
        raise ConfigError(f"eval.image_format {image_format!r} is not one of {tuple(IMAGE_FORMATS)}")
    suffix = IMAGE_FORMATS[image_format]
    for column in ("prompt_id", "prompt"):
        if column not in prompt_table.columns:
            raise ConfigError(f"the {benchmark} prompt table has no {column!r} column")
    reserved = sorted(set(prompt_table.columns) & (set(MANIFEST_COLUMNS) - {"prompt_id", "prompt"}))
    if reserved:
        raise ConfigError(f"the {benchmark} prompt table uses manifest column names {reserved}; rename them")
    prompt_ids = prompt_table["prompt_id"].astype(str)
    duplicated = prompt_ids[prompt_ids.duplicated()].unique().tolist()
    if duplicated:
        raise ConfigError(f"the {benchmark} prompt table repeats prompt ids {duplicated[:5]}")
    metadata_columns = [c for c in prompt_table.columns if c not in ("prompt_id", "prompt")]
    settings = sampler.image_settings()

    rows = []
    ordinal = 0
    for prompt_id, record in zip(prompt_ids, prompt_table.to_dict("records")):
        folder = safe_path_component(prompt_id)
        for sample_index in range(samples_per_prompt):
            seed = ordinal if seed_scheme == "protocol" else stable_seed(benchmark, prompt_id, sample_index)
            concept, weights = plan.assign(ordinal, seed)
            rows.append(
                {
                    "image_id": f"{benchmark}/{prompt_id}/{sample_index}",
                    "benchmark": benchmark,
                    "prompt_id": prompt_id,
                    "prompt": str(record["prompt"]),
                    "negative_prompt": negative_prompt,
                    "sample_index": sample_index,
                    "seed": seed,
                    "concept": concept,
                    "concept_weights": json.dumps(weights, sort_keys=True),
                    **settings,
                    "status": PENDING,
                    "path": f"images/{folder}/{sample_index}{suffix}",
                    **{column: record[column] for column in metadata_columns},
                }
            )
            ordinal += 1
    manifest = pd.DataFrame(rows, columns=[*MANIFEST_COLUMNS, *metadata_columns])
    for column in ("sample_index", "seed", "steps", "height", "width"):
        manifest[column] = manifest[column].astype("int64")
    if (
        manifest["path"].duplicated().any()
    ):  # only a sanitising collision could do this; never overwrite silently
        raise ConfigError(
            f"two prompt ids of {benchmark} map to the same image folder; make the ids distinct"
        )
    return manifest


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_path_component(name: str, limit: int = 96) -> str:
    """A file-system-safe folder name for an id. Ids that had to change get a digest suffix to stay distinct."""
    safe = _UNSAFE.sub("_", name).strip("._")[:limit]
    if safe != name or not safe:
        safe = f"{safe}-{short_hash(name)}"
    return safe


def weights_of(row_weights: str | Mapping[str, float]) -> dict[str, float]:
    """A manifest row's concept weights as a dict."""
    if isinstance(row_weights, Mapping):
        return {str(k): float(v) for k, v in row_weights.items()}
    return {str(k): float(v) for k, v in json.loads(row_weights).items()}
