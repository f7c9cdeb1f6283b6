"""Trained h-space modules as a plug-in for a stock diffusers pipeline (any whose UNet is a UNet2DConditionModel).

    edit = respodiff.HSpaceModules.from_pretrained("my-gender-modules")   # a folder or a Hugging Face Hub id
    with edit.apply(pipe, sampling="balanced"):
        images = pipe(prompts, num_images_per_prompt=4, generator=[...]).images

`apply` registers one hook on `pipe.unet` that, before every UNet call, sets the h-space edit (hspace.HSpaceEditor)
for the images of the running `pipe(...)` call: image i of the call (prompt-major, the order in which diffusers lays
out prompts x num_images_per_prompt) gets the weights `ConceptPlan.assign(i, seed_i)` gives it, on the conditional
half of the CFG batch, exactly as the suite's generation (generation/render.py) edits manifest row i of a batch.
So a pipeline call over the same prompts, seeds and CPU generators as a suite batch renders the same pixels.
"""

from __future__ import annotations

import json
import numbers
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook

from .errors import ConfigError, MissingAssetError
from .generation.engine import resolve_modules
from .generation.plan import ConceptPlan
from .generation.render import execution_device
from .hspace import HSpaceEditor, hspace_shape
from .io import write_text_atomically
from .modules import TransformationSet, check_compatible

PLAN_HOOK = "respodiff_concept_plan"
MODEL_CARD_FILE = "README.md"


class HSpaceModules:
    """One trained TransformationSet (module keys: its concept names), or several combined (keys "<set>/<concept>",
    for compositions such as gender x race), ready to apply to a pipeline."""

    def __init__(self, sets: TransformationSet | Mapping[str, TransformationSet], source: Path | None = None):
        self.sets = sets if isinstance(sets, TransformationSet) else dict(sets)
        self.source = source  # the folder loaded from: a run's results/ beside it go into the model card

    # --- loading, combining, sharing -----------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | os.PathLike,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool | None = None,
    ) -> HSpaceModules:
        """Modules from a local folder or a Hub repo (cached by huggingface_hub; HF_HUB_OFFLINE=1 or
        local_files_only=True reads the cache only). Every module file is checked against its recorded sha256."""
        folder = Path(path_or_hub_id).expanduser()
        if not folder.is_dir():
            folder = _download(str(path_or_hub_id), revision, cache_dir, local_files_only)
        return cls(TransformationSet.load(folder), source=folder)

    @classmethod
    def combine(cls, **named: HSpaceModules) -> HSpaceModules:
        """Several sets under names, e.g. combine(gender=g, race=r): keys "gender/woman", "race/black", ..."""
        return cls({name: modules._single("combine") for name, modules in named.items()})

    @property
    def concepts(self) -> list[str]:
        """The module keys apply() accepts."""
        if isinstance(self.sets, TransformationSet):
            return self.sets.concepts
        return [f"{name}/{concept}" for name, tset in self.sets.items() for concept in tset.concepts]

    @property
    def metadata(self) -> dict[str, Any]:
        return self._single("metadata").metadata

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """The suite's folder layout (metadata.json + <concept>/<part>/{config.json, safetensors}) and a model card."""
        from .export import model_card, run_metrics

        tset = self._single("save_pretrained")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        results = self.source.parent / "results" if self.source is not None else None
        write_text_atomically(folder / MODEL_CARD_FILE, model_card(tset.metadata, run_metrics(results)))
        return tset.save(folder)  # metadata.json last: its presence marks a complete folder

    def push_to_hub(self, repo_id: str, private: bool | None = None, token: str | None = None,
                    commit_message: str = "Upload respodiff h-space modules") -> Any:
        """save_pretrained into a temporary folder, then one upload_folder commit to the Hub repo (created if needed)."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder)
            api.create_repo(repo_id, private=private, exist_ok=True)
            return api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)

    # --- applying ------------------------------------------------------------------------------------------------

    def plan(self, concepts: str | Sequence[str] | None = None, sampling: str = "balanced",
             weights: Mapping[str, float] | None = None, mode: str | None = None) -> ConceptPlan:
        """The suite's ConceptPlan for these modules. Default mode: `compose` with weights, else `sum` for safety
        modules (the summed safety transformation), else `fair` (one concept per image)."""
        if mode is None:
            kinds = {tset.metadata.get("kind") for tset in self._all_sets()}
            mode = "compose" if weights else "sum" if kinds == {"safety"} else "fair"
        return ConceptPlan(mode=mode, concepts=self._keys(concepts), sampling=sampling, weights=dict(weights or {}))

    def apply(
        self,
        pipe,
        concepts: str | Sequence[str] | None = None,
        *,
        sampling: str = "balanced",
        weights: Mapping[str, float] | None = None,
        mode: str | None = None,
        seed: int | Sequence[int] | None = None,
        parts: Sequence[str] | None = None,
        cfg_half: bool | None = None,
    ) -> AppliedModules:
        """Edit every following `pipe(...)` call until remove(pipe) (or the end of a `with` block).

        concepts: module keys, a set name of combined modules (all its concepts), or None (all).
        sampling: "balanced" gives image i of a call concepts[i % K]; "uniform" draws image i's concept from
            random.Random(seed_i), the suite's rule (pass the seeds of the images' generators).
        weights: fixed weights for every image, e.g. {"gender/woman": 0.6, "race/black": 0.4}.
        seed: image i's seed: seeds[i] of a sequence (one per image of each call), or seed + i of an int.
        parts: which parts of each concept to apply (default all: RAM + SAM), e.g. ["ram"].
        cfg_half: edit only the conditional half of the CFG batch; default: whenever the pipeline runs CFG
            (its do_classifier_free_guidance), as the suite's generation does.
        """
        plan = self.plan(concepts, sampling, weights, mode)
        if seed is not None:  # numpy integers and arrays too
            seed = int(seed) if isinstance(seed, numbers.Integral) else [int(value) for value in seed]
        if plan.mode == "fair" and plan.sampling == "uniform" and seed is None:
            raise ConfigError("uniform sampling draws each image's concept from its seed: pass seed= (an int or "
                              "one seed per image, the seeds of the images' generators)")
        # Looked up on the class: the property reads the guidance scale, which a pipeline gets at its first call.
        if cfg_half is None and not hasattr(type(pipe), "do_classifier_free_guidance"):
            raise ConfigError(f"{type(pipe).__name__} does not say whether it runs classifier-free guidance; "
                              "pass cfg_half=True (edit the conditional half) or False (edit the whole batch)")
        # The h-space shape depends on the image size, so it is checked at each call's first UNet call.
        for tset in self._all_sets():
            check_compatible(tset.metadata, None, None, where=self._where(tset), unet=pipe.unet)
        used = {"none": [], "compose": list(plan.weights)}.get(plan.mode, plan.concepts)
        modules = resolve_modules(self.sets, _weights_table(used), parts)
        self.remove(pipe)
        hook = _PlanHook(pipe, plan, modules, seed, cfg_half, self)
        HookRegistry.check_if_exists_or_initialize(pipe.unet).register_hook(hook, PLAN_HOOK)
        return AppliedModules(self, pipe)

    @staticmethod
    def remove(pipe) -> None:
        """Take the modules off: the UNet computes as the base model again (no-op when none are applied)."""
        registry = getattr(pipe.unet, "_diffusers_hook", None)
        hook = registry.get_hook(PLAN_HOOK) if registry is not None else None
        if hook is None:
            return
        registry.remove_hook(PLAN_HOOK, recurse=False)
        hook.release()

    # --- helpers -------------------------------------------------------------------------------------------------

    def _single(self, what: str) -> TransformationSet:
        if not isinstance(self.sets, TransformationSet):
            raise ConfigError(f"{what} works on one set of modules; these combine {sorted(self.sets)}")
        return self.sets

    def _all_sets(self) -> list[TransformationSet]:
        return [self.sets] if isinstance(self.sets, TransformationSet) else list(self.sets.values())

    def _where(self, tset: TransformationSet) -> str:
        if isinstance(self.sets, TransformationSet):
            return str(self.source or "these modules")
        return next(f"modules {name!r}" for name, other in self.sets.items() if other is tset)

    def _keys(self, concepts: str | Sequence[str] | None) -> list[str]:
        if concepts is None:
            return self.concepts
        if isinstance(concepts, str):
            if isinstance(self.sets, Mapping) and concepts in self.sets:
                return [f"{concepts}/{concept}" for concept in self.sets[concepts].concepts]
            return [concepts]
        return list(concepts)


class AppliedModules:
    """What apply() returns: `remove()` it, or use it as a context manager that removes the modules on exit."""

    def __init__(self, modules: HSpaceModules, pipe) -> None:
        self.modules, self.pipe = modules, pipe

    def remove(self) -> None:
        self.modules.remove(self.pipe)

    def __enter__(self) -> AppliedModules:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


class _PlanHook(ModelHook):
    """Before each UNet call: the edit for the images of this batch (their count is the batch, halved under CFG)."""

    def __init__(self, pipe, plan: ConceptPlan, modules: Mapping[str, torch.nn.Module],
                 seed: int | Sequence[int] | None, cfg_half: bool | None, owner: HSpaceModules) -> None:
        super().__init__()
        self.pipe, self.plan, self.seed, self.cfg_half, self.owner = pipe, plan, seed, cfg_half, owner
        self.keys = list(modules)
        self.transformations = [modules[key].to(execution_device(pipe)) for key in self.keys]
        # Like generation/render.py's Renderer: leave an editor another user attached on the UNet.
        self.owns_editor = not HSpaceEditor.is_attached(pipe.unet)
        self.editor = HSpaceEditor(pipe.unet)
        self.checked_sizes: set[tuple[int, int]] = set()

    def pre_forward(self, module, *args, **kwargs):
        sample = args[0] if args else kwargs["sample"]
        self._check_size(tuple(sample.shape[-2:]))
        cfg_half = self.pipe.do_classifier_free_guidance if self.cfg_half is None else self.cfg_half
        weights = self.row_weights(sample.shape[0] // 2 if cfg_half else sample.shape[0])
        if self.keys and torch.any(weights):
            self.editor.set(self.transformations, weights, cfg_half=cfg_half)
        else:
            self.editor.clear()
        return args, kwargs

    def row_weights(self, images: int) -> torch.Tensor:
        """One row of module weights per image of the call, as generation/render.py builds them from a manifest."""
        rows = [self.plan.assign(index, seed)[1] for index, seed in enumerate(self._seeds(images))]
        return torch.tensor([[row.get(key, 0.0) for key in self.keys] for row in rows], dtype=torch.float32)

    def _seeds(self, images: int) -> list[int]:
        if self.seed is None:
            return [0] * images  # only plans that ignore the seed get here (apply refuses uniform without one)
        if isinstance(self.seed, int):
            return [self.seed + index for index in range(images)]
        if len(self.seed) != images:
            raise ConfigError(f"apply() was given {len(self.seed)} seeds but this pipeline call renders {images} "
                              "images; pass one seed per image (prompts x num_images_per_prompt)")
        return self.seed

    def _check_size(self, latent_size: tuple[int, int]) -> None:
        if latent_size in self.checked_sizes:
            return
        shape = hspace_shape(self.pipe.unet, *latent_size)
        for tset in self.owner._all_sets():
            check_compatible(tset.metadata, shape, None, where=self.owner._where(tset))
        self.checked_sizes.add(latent_size)

    def release(self) -> None:
        self.editor.clear()
        if self.owns_editor:
            self.editor.remove()


def _weights_table(keys: Sequence[str]):
    """A one-row stand-in for a manifest, so that module keys resolve exactly as generate() resolves them."""
    import pandas as pd

    return pd.DataFrame({"concept_weights": [json.dumps({key: 1.0 for key in keys})]})


def _download(repo_id: str, revision: str | None, cache_dir, local_files_only: bool | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_OFFLINE

    offline = bool(local_files_only) or HF_HUB_OFFLINE
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=offline))
    except Exception as failure:  # noqa: BLE001 - a bad id, a missing cache entry and a network error alike
        where = "in the Hugging Face cache (offline)" if offline else "on the Hugging Face Hub"
        raise MissingAssetError(
            f"{repo_id!r} is neither a folder nor a module repo found {where} ({type(failure).__name__}: "
            f"{failure}). Pass the folder `python -m respodiff.export` wrote, or fetch the repo with "
            f"`huggingface-cli download {repo_id}{f' --revision {revision}' if revision else ''}`"
        ) from failure
