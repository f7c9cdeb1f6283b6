"""What a method is: one class per `method.kind`, found through a registry, asked by the stages for everything.

The stages never branch on a kind. They ask the run's Method to
- validate its `method.*` keys and settings (config time: milliseconds, no file read),
- check the files it needs (before any model loads),
- say whether it is trained already (without a model) and train (with the loaded pipeline),
- prepare the pipeline it generates with (SLD's safe pipeline, ESD's UNet weights),
- plan which concepts each image gets, change the manifest (negative prompts), add generation options,
- load the modules generation applies.
Every hook has a do-nothing default, so a method states only what it changes.

A method outside this package: put its class in any importable module, decorate it with `@register_method`, and
name the module in its YAML (`method.module: my_package.my_method`); the registry imports it on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from ..errors import ConfigError
from ..registries import add_to_registry, import_submodules

# Keys every method config may have: its display name, its registry key and the module that registers it.
COMMON_KEYS = frozenset({"name", "kind", "module"})

LogFn = Callable[[dict, int], None]


@dataclass
class TrainingRun:
    """Where a method's training writes (modules go to run_dir/modules) and what it records."""

    run_dir: Path
    base_model: str  # ModelSpec.identity: what modules record and are checked against
    h_shape: tuple[int, int, int]
    log: LogFn | None = None

    @property
    def modules_dir(self) -> Path:
        return self.run_dir / "modules"


class Method:
    """A method of the comparison. Subclasses set `kind` (and `keys`) and override the hooks that concern them.

    `cfg` is the whole resolved run config as plain Python (method, concepts, train, eval, seed, ...).
    """

    kind: ClassVar[str] = ""
    # method.* keys this kind reads besides COMMON_KEYS; any other key is refused by name.
    keys: ClassVar[frozenset[str]] = frozenset()
    # Whether the train stage has work for this method.
    trains: ClassVar[bool] = False

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.cfg = cfg
        self.options: Mapping[str, Any] = cfg["method"]
        self.concepts: Mapping[str, Any] = cfg["concepts"]

    @property
    def name(self) -> str:
        return str(self.options.get("name") or self.kind)

    @property
    def concept_names(self) -> list[str]:
        return list(self.concepts["items"])

    # --- config time ---------------------------------------------------------------------------------------------

    def validate(self, arch: str) -> None:
        """Check the method's settings against the concept set and the model architecture (no file read)."""

    def check_assets(self) -> None:
        """Check the files the method needs (before any model loads)."""

    # --- training ------------------------------------------------------------------------------------------------

    def is_trained(self, modules_dir: Path, base_model: str) -> bool:
        """Whether modules_dir holds what `train` would produce, judged without loading a model."""
        return True

    def train(self, pipe, run: TrainingRun) -> None:
        """Train into run.modules_dir with the loaded pipeline (resuming where a previous run stopped)."""

    def has_resumable_state(self, run_dir: Path) -> bool:
        """Whether run_dir holds this method's interrupted-training state (checkpoints) that `train` resumes."""
        return False

    # --- generation ----------------------------------------------------------------------------------------------

    def prepare_pipeline(self, pipe):
        """The pipeline this method generates with, built from the loaded base pipeline (no second load)."""
        return pipe

    def concept_plan(self, sampling: str, compose: Mapping[str, float] | None):
        """Which h-space concepts each image gets; the base model's plan applies none."""
        from ..generation import ConceptPlan

        return ConceptPlan(mode="none", concepts=self.concept_names, sampling=sampling, weights={})

    def adjust_manifest(self, manifest: pd.DataFrame, sampling: str) -> pd.DataFrame:
        """Per-image changes the method makes to a benchmark's manifest (e.g. negative prompts)."""
        return manifest

    def generation_options(self, model_identity: str) -> dict[str, Any]:
        """Keyword arguments of `respodiff.generation.generate`: the model identity image stores are bound to and
        any pipeline call arguments. They are part of the generation fingerprint."""
        return {"model_identity": model_identity}

    def inference_parts(self) -> list[str] | None:
        """Which parts of each concept's modules generation applies (None: all)."""
        return None

    def check_modules(self, modules_dir: Path, base_model: str) -> None:
        """Before any model loads: the modules generation will apply exist, are intact and belong to this model."""

    def load_modules(self, modules_dir: Path, h_shape: tuple[int, int, int], base_model: str, device: str):
        """The TransformationSet generation applies, or None when the method applies none."""
        return None


class ModuleMethod(Method):
    """A method whose generation applies per-concept h-space modules from the run's modules folder: one concept
    per image for fairness (balanced or uniform), all summed for safety, fixed weights for a composition."""

    def concept_plan(self, sampling: str, compose: Mapping[str, float] | None):
        from ..generation import ConceptPlan

        names = self.concept_names
        cycle = self.concepts.get("compose_cycle")
        if cycle:
            from ..generation.plan import compose_cycle_plan

            return compose_cycle_plan(cycle, names)
        if compose:
            return ConceptPlan(mode="compose", concepts=names, sampling=sampling, weights=dict(compose))
        mode = "sum" if self.concepts["kind"] == "safety" else "fair"
        return ConceptPlan(mode=mode, concepts=names, sampling=sampling, weights={})

    def check_compose_cycle(self) -> None:
        """The cycle names this set's concepts, and every benchmark of the run gives each prompt whole rounds of
        it (checked at config time: a cut round would otherwise surface only after training)."""
        from ..evaluation.registry import get_benchmark
        from ..evaluation.setup import EvalContext, benchmark_settings

        if not self.concepts.get("compose_cycle"):
            return
        eval_cfg = self.cfg["eval"]
        if eval_cfg.get("compose"):
            raise ConfigError("eval.compose and concepts.compose_cycle are both set; a run composes one way: "
                              "set eval.compose=null (or concepts.compose_cycle=null)")
        plan = self.concept_plan(str(eval_cfg.get("sampling")), None)
        context = EvalContext(seed=int(self.cfg["seed"]), cache_dir=str(self.cfg["paths"]["cache_dir"]),
                              concepts=self.concept_names,
                              attribute_prompts=list(self.concepts.get("attribute_prompts") or []))
        for name in eval_cfg.get("benchmarks") or ():
            settings = benchmark_settings(eval_cfg, name, context)
            samples = get_benchmark(name).samples_per_prompt(settings, len(self.concept_names))
            plan.check_samples_per_prompt(name, samples)

    def check_modules(self, modules_dir: Path, base_model: str) -> None:
        from ..modules import METADATA_FILE, checked_metadata

        # Nothing trained yet: the train stage (or load_modules' own message) says what to do.
        if (modules_dir / METADATA_FILE).is_file():
            checked_metadata(modules_dir, None, base_model)

    def load_modules(self, modules_dir: Path, h_shape: tuple[int, int, int], base_model: str, device: str):
        from ..modules import TransformationSet

        return TransformationSet.load(modules_dir, expected_h_shape=h_shape, expected_base_model=base_model).to(device)


# --- the registry ---------------------------------------------------------------------------------------------

_REGISTRY: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make `cls` the implementation of `method.kind: <cls.kind>`."""
    if not cls.kind:
        raise ConfigError(f"{cls.__qualname__} needs a non-empty class attribute `kind` to be registered")
    return add_to_registry(_REGISTRY, cls.kind, cls, "method kind")


def _import_builtin_methods() -> None:
    from .. import methods

    import_submodules(methods, {"base"})


def available_methods() -> list[str]:
    _import_builtin_methods()
    return sorted(_REGISTRY)


def method_class(method_cfg: Mapping[str, Any]) -> type[Method]:
    """The class registered for `method.kind`, importing `method.module` first when the config names one."""
    module = method_cfg.get("module")
    if module:
        try:
            importlib.import_module(str(module))
        except ImportError as failure:
            raise ConfigError(f"method.module {module!r} cannot be imported: {failure}") from None
    kind = method_cfg.get("kind")
    if kind not in _REGISTRY:
        _import_builtin_methods()
    if kind not in _REGISTRY:
        raise ConfigError(f"method.kind {kind!r} is not one of {sorted(_REGISTRY)}")
    return _REGISTRY[kind]


def build_method(cfg: Mapping[str, Any]) -> Method:
    """The run's Method from the whole resolved config; a method.* key its kind does not read is refused."""
    cls = method_class(cfg["method"])
    unknown = sorted(set(cfg["method"]) - COMMON_KEYS - cls.keys)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(f'method.{key}' for key in unknown)} for method kind {cls.kind!r}; "
            f"it reads {sorted(COMMON_KEYS | cls.keys)}"
        )
    return cls(cfg)
