"""Training of h-space modules: settings, the score-matching loop, precision, records, and SDisc.

    settings.py   ConceptSpec, TrainSettings and their checks; reading them from a resolved plain config
    precision.py  autocast policy, latent size of an h-space shape, the Adam step with fp16 loss scaling
    records.py    trajectory fingerprint, run records and `is_trained`, checkpoints, loss logs, saved sets
    loop.py       `train_transformations`: RespoDiff's RAM/SAM loop (and its ablations, CoDSMa)
    sdisc.py      SDisc's vectors, learnt with the same precision, optimiser step, records and loss log

Only SDisc's image step imports respodiff.generation; nothing here imports methods, stages or config.
"""

from .loop import train_transformations
from .precision import MixedPrecision, adam, autocast_dtype, latent_size, training_weights
from .records import is_trained, run_record, saved_record, training_record
from .sdisc import SDiscSettings, image_prompts, sdisc_record, sdisc_settings, train_sdisc
from .settings import (
    BUDGET_SECTIONS,
    KINDS,
    LAMBDA_MODES,
    LAMBDA_REFERENCE,
    LAMBDA_ZERO_MODES,
    PART_MODES,
    PRECISIONS,
    REVERSE_PARTS,
    ConceptSpec,
    TrainSettings,
    budget,
    concept_specs,
    config_number,
    train_settings,
    validate_concepts,
)

__all__ = [
    "BUDGET_SECTIONS",
    "KINDS",
    "LAMBDA_MODES",
    "LAMBDA_REFERENCE",
    "LAMBDA_ZERO_MODES",
    "PART_MODES",
    "PRECISIONS",
    "REVERSE_PARTS",
    "ConceptSpec",
    "MixedPrecision",
    "SDiscSettings",
    "TrainSettings",
    "adam",
    "autocast_dtype",
    "budget",
    "concept_specs",
    "config_number",
    "image_prompts",
    "is_trained",
    "latent_size",
    "run_record",
    "saved_record",
    "sdisc_record",
    "sdisc_settings",
    "train_sdisc",
    "train_settings",
    "training_record",
    "training_weights",
    "train_transformations",
    "validate_concepts",
]
