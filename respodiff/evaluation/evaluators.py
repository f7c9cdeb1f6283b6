"""One object that provides every evaluation model lazily, checks their files up front and reports their identity.

Production: `Evaluators(EvaluatorSettings.from_dict(cfg.eval.evaluators))` (a run goes through
`respodiff.evaluation.setup.build_evaluators`) resolves the paper's checkpoints (Hub cache, or a download when
allowed; assets.py) the first time each one is needed. `check(requires)` (called by every benchmark's
`check_assets`, before any generation) fails with a `MissingAssetError` naming the id, the cache folder and the
command that fetches it.

Tests and the toy world: pass ready components, e.g.
`Evaluators(EvaluatorSettings(), clip=ClipScorer.from_folder(tiny_dir), fid=FidScorer(small_net, "small", stats))`;
injected components are neither checked nor loaded again.

Runs at the tiny evaluation scale configure the stand-ins instead (`scale="tiny"`, a tiny CLIP folder, Q16 on a
small open_clip arch with seeded random weights, `fid.features="quadrant-colours"`; see stand_ins.py), so the
production loaders above are what loads them; every identity then carries the scale and a warning.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

from respodiff.evaluation.assets import (
    check_evaluator_assets,
    q16_quick_gelu,
    resolve_clip_folder,
    resolve_inception,
    resolve_q16_checkpoint,
    resolve_q16_prompts,
)
from respodiff.evaluation.evaluator_settings import EvaluatorSettings
from respodiff.evaluation.quality import FidScorer

STAND_IN_WARNING = "tiny stand-ins: numbers are meaningless"
# Random Q16 weights (q16.pretrained=random) are drawn from this seed, so stand-in scores repeat run to run.
RANDOM_WEIGHTS_SEED = 0
# The libraries whose versions each component's identity records.
_PACKAGES = {"clip": ("transformers",), "q16": ("open_clip_torch",), "nudenet": ("onnxruntime",),
             "fid": ("clean-fid",)}


@contextmanager
def _seeded(enabled: bool):
    """Draw random weights from a fixed seed without disturbing the caller's random stream."""
    if not enabled:
        yield
        return
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        yield


class Evaluators:
    """Lazy access to the evaluation models; see the module docstring for production vs test construction."""

    def __init__(self, settings: EvaluatorSettings | None = None, *, clip=None, q16=None, nudenet=None, fid=None):
        self.settings = settings or EvaluatorSettings()
        self._components: dict[str, Any] = {"clip": clip, "q16": q16, "nudenet": nudenet, "fid": fid}
        self._injected = {name for name, value in self._components.items() if value is not None}

    def check(self, requires: Iterable[str]) -> None:
        check_evaluator_assets(self.settings, set(requires) - self._injected)

    @property
    def clip(self):
        return self._get("clip")

    @property
    def q16(self):
        return self._get("q16")

    @property
    def nudenet(self):
        return self._get("nudenet")

    @property
    def fid(self) -> FidScorer:
        return self._get("fid")

    def _get(self, name: str):
        if self._components[name] is None:
            self._components[name] = getattr(self, f"_load_{name}")()
        return self._components[name]

    def _load_clip(self):
        from respodiff.evaluation.classifiers import ClipScorer

        folder, identity = resolve_clip_folder(self.settings)
        return ClipScorer.from_folder(folder, device=self.settings.resolved_device,
                                      batch_size=self.settings.batch_size, identity=identity)

    def _load_q16(self):
        from respodiff.evaluation.classifiers import Q16Classifier

        checkpoint, identity = resolve_q16_checkpoint(self.settings)
        with _seeded(enabled=checkpoint is None):
            return Q16Classifier.load(self.settings.q16.arch, checkpoint, resolve_q16_prompts(self.settings),
                                      quick_gelu=q16_quick_gelu(self.settings), device=self.settings.resolved_device,
                                      batch_size=self.settings.batch_size, identity=identity)

    def _load_nudenet(self):
        from respodiff.evaluation.classifiers import NudeNetClassifier

        nudenet = self.settings.nudenet
        return NudeNetClassifier(nudenet.threshold, nudenet.classes, model_path=nudenet.model)

    def _load_fid(self):
        settings = self.settings
        if settings.fid.features == "quadrant-colours":
            from respodiff.evaluation.testing import QuadrantColours

            extractor, extractor_id = QuadrantColours(), QuadrantColours.identity
        else:
            from respodiff.evaluation.classifiers import load_inception

            extractor, extractor_id = load_inception(resolve_inception(settings), settings.resolved_device)
        return FidScorer(extractor, extractor_id, settings.stats_path, mode=settings.fid.mode,
                         device=settings.resolved_device, batch_size=settings.batch_size,
                         num_workers=settings.fid.num_workers)

    def identity(self, requires: Iterable[str]) -> dict[str, Any]:
        """Who scored the images: checkpoint names and revisions, thresholds, file hashes, library versions."""
        from importlib.metadata import PackageNotFoundError, version

        out: dict[str, Any] = {}
        versions = {"torch": version("torch")}
        for name in sorted(set(requires)):
            component = self._get(name)
            out.update(component.identity() if hasattr(component, "identity") else {name: type(component).__name__})
            for package in _PACKAGES.get(name, ()):
                try:
                    versions[package] = version(package)
                except PackageNotFoundError:
                    versions[package] = None
        out["versions"] = versions
        scale = self.settings.scale
        out["scale"] = scale
        stand_ins = sorted(set(requires) & {"clip", "q16", "fid"}) if scale != "real" else []
        if stand_ins or scale == "tiny":
            # Put where every reader of a result sees it: these evaluators are random or weightless stand-ins.
            out["stand_ins"] = stand_ins
            out["warning"] = STAND_IN_WARNING
        return out

    def describe_config(self) -> dict[str, Any]:
        """The settings as plain data (the evaluate stage records them beside every result)."""
        return asdict(self.settings)
