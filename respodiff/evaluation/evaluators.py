"""One object that provides every evaluation model lazily, checks their files up front and reports their identity.

Production: `Evaluators.from_settings(settings)` resolves the paper's checkpoints (Hub cache, or a download when
allowed) the first time each one is needed. `check(requires)` (called by every benchmark's `check_assets`, before
any generation) fails with a `MissingAssetError` naming the id, the cache folder and the command that fetches it.

Tests and the toy world: pass ready components, e.g.
`Evaluators(EvaluatorConfig(), clip=ClipScorer.from_folder(tiny_dir), fid=FidScorer(small_net, "small", stats))`;
injected components are neither checked nor loaded again.

Runs at the tiny evaluation scale configure the stand-ins instead (`scale="tiny"`, a tiny CLIP folder, Q16 on a
small open_clip arch with seeded random weights, `fid_features="quadrant-colours"`; see stand_ins.py), so the
production loaders above are what loads them; every identity then carries the scale and a warning.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from respodiff.errors import ConfigError, MissingAssetError
from respodiff.evaluation.q16_prompts import Q16_PROMPTS_URL, converted_path
from respodiff.evaluation.quality import FID_MODE, FidScorer
from respodiff.evaluation.safety import NUDENET_EXPOSED_CLASSES

DEFAULT_CLIP = "openai/clip-vit-base-patch32"
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
COMPONENTS = ("clip", "q16", "nudenet", "fid")
# real: the paper's evaluators; toy / tiny: deterministic stand-ins (stand_ins.py) whose numbers mean nothing.
SCALES = ("real", "toy", "tiny")
STAND_IN_WARNING = "tiny stand-ins: numbers are meaningless"
# FID feature extractors: clean-fid's Inception (the paper's) or the weightless stand-in of testing.py.
FID_FEATURES = ("inception", "quadrant-colours")
# Random Q16 weights (q16_pretrained=None) are drawn from this seed, so stand-in scores repeat run to run.
RANDOM_WEIGHTS_SEED = 0
# Keys too generic to read from nested blocks of an eval config (they mean other things there).
_GENERIC_KEYS = {"batch_size", "device"}
# Other names the configs use for evaluator keys.
EVALUATOR_ALIASES = {"q16_model": "q16_arch"}

# Files a transformers CLIP folder needs; each inner tuple lists alternatives.
_CLIP_FILES = (("config.json",), ("preprocessor_config.json", "processor_config.json"), ("tokenizer.json", "vocab.json"),
               ("model.safetensors", "pytorch_model.bin"))
_OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def default_cache_dir() -> Path:
    """Same default as conf/paths: $RESPODIFF_CACHE, else ~/.cache/respodiff."""
    return Path(os.environ.get("RESPODIFF_CACHE") or Path.home() / ".cache" / "respodiff")


@dataclass
class EvaluatorConfig:
    """Evaluator settings (the `evaluators` section of a benchmark's settings). Paths default under cache_dir."""

    clip_model: str = DEFAULT_CLIP  # Hub id or local folder (transformers CLIPModel + CLIPProcessor)
    clip_revision: str | None = None
    q16_arch: str = "ViT-L-14"
    q16_pretrained: str | None = "openai"  # open_clip tag, a local weights file, or None = random (tests only)
    q16_quick_gelu: bool | None = None  # None: as the tag's config says (OpenAI weights were trained with QuickGELU)
    q16_prompts: str | None = None  # Q16's prompts.p (or its .safetensors); default <cache>/q16/ViT-L-14/prompts.p
    nudenet_threshold: float = 0.2  # public I2P script; 0.6 is the other common choice
    nudenet_classes: tuple[str, ...] = NUDENET_EXPOSED_CLASSES
    nudenet_model: str | None = None  # None: the ONNX model shipped in the nudenet package
    fid_mode: str = FID_MODE
    fid_features: str = "inception"  # inception | quadrant-colours (stand-in, tiny scale only)
    inception_dir: str | None = None  # folder holding inception-2015-12-05.pt; default <cache>/cleanfid
    fid_stats_dir: str | None = None  # reference statistics cache; default <cache>/fid_stats
    fid_num_workers: int = 0
    cache_dir: str | None = None
    hf_cache_dir: str | None = None  # None: huggingface_hub's default cache
    allow_download: bool | None = None  # None: download unless HF_HUB_OFFLINE is set
    device: str = "auto"
    batch_size: int = 32
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes recorded in the identity
    scale: str = "real"  # real | toy | tiny: recorded in every identity; not real = stand-ins, numbers meaningless

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ConfigError(f"evaluator scale {self.scale!r} is not one of {SCALES}")
        if self.fid_features not in FID_FEATURES:
            raise ConfigError(f"fid_features {self.fid_features!r} is not one of {FID_FEATURES}")

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None, *, device: str | None = None) -> EvaluatorConfig:
        """From one benchmark's settings or from the whole eval config.

        Evaluator keys may sit flat (as conf/eval's benchmark blocks have them), inside benchmark blocks of the
        eval config (collected from all of them; two blocks giving one key different values is an error, since
        one set of evaluators serves every benchmark), or under `evaluators`, which wins over both.
        """
        settings = dict(settings or {})
        names = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        origin: dict[str, str] = {}

        def take(block: Mapping[str, Any], where: str, nested: bool = False) -> None:
            for key, value in block.items():
                name = EVALUATOR_ALIASES.get(key, key)
                if name not in names or name == "extra" or value is None:
                    continue
                if nested and name in _GENERIC_KEYS:
                    continue  # e.g. eval.sampler.batch_size is the generation batch, not the evaluators' one
                if name in values and values[name] != value:
                    raise ConfigError(f"evaluator setting {name!r} is {values[name]!r} in {origin[name]} but "
                                      f"{value!r} in {where}; one evaluator set serves all benchmarks")
                values[name], origin[name] = value, where

        take(settings, "the settings")
        for key, block in settings.items():
            if key != "evaluators" and key not in names and isinstance(block, Mapping):
                take(block, f"settings[{key!r}]", nested=True)
        values.update(settings.get("evaluators") or {})
        if device is not None:
            values["device"] = str(device)
        return cls.from_dict(values)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> EvaluatorConfig:
        values = dict(values or {})
        for alias, name in EVALUATOR_ALIASES.items():
            if alias in values:
                values[name] = values.pop(alias)
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown evaluator settings {unknown}; valid: {sorted(names)}")
        if "nudenet_classes" in values:
            values["nudenet_classes"] = tuple(values["nudenet_classes"])
        return cls(**values)

    @property
    def cache(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()

    @property
    def q16_prompts_path(self) -> Path:
        return Path(self.q16_prompts) if self.q16_prompts else self.cache / "q16" / self.q16_arch / "prompts.p"

    @property
    def inception_path(self) -> Path:
        return Path(self.inception_dir) if self.inception_dir else self.cache / "cleanfid"

    @property
    def stats_path(self) -> Path:
        return Path(self.fid_stats_dir) if self.fid_stats_dir else self.cache / "fid_stats"

    @property
    def downloads_allowed(self) -> bool:
        if self.allow_download is not None:
            return self.allow_download
        from huggingface_hub import constants

        return not constants.HF_HUB_OFFLINE

    @property
    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


# --- locating files -------------------------------------------------------------------------------------------

def _hub_cache_dir(config: EvaluatorConfig) -> str:
    from huggingface_hub import constants

    return config.hf_cache_dir or constants.HF_HUB_CACHE


def _cached(repo_id: str, filename: str, revision: str | None, config: EvaluatorConfig) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=_hub_cache_dir(config), revision=revision)
    return found if isinstance(found, str) else None


def _missing_files(folder: Path, required: Iterable[tuple[str, ...]]) -> list[str]:
    return [" or ".join(options) for options in required if not any((folder / o).is_file() for o in options)]


def resolve_clip_folder(config: EvaluatorConfig) -> tuple[Path, dict]:
    """A local folder with the CLIP checkpoint (a Hub snapshot or the configured folder) and its identity."""
    source = config.clip_model
    if Path(source).is_dir():
        folder = Path(source)
        missing = _missing_files(folder, _CLIP_FILES)
        if missing:
            raise MissingAssetError(f"CLIP folder {folder} lacks {missing}; save a CLIPModel and CLIPProcessor "
                                    "there with save_pretrained, or set evaluators.clip_model to a Hub id")
        return folder, {"clip_model": str(folder.resolve()), "clip_revision": None}

    def snapshot() -> Path | None:
        found = [next((p for name in options if (p := _cached(source, name, config.clip_revision, config))), None)
                 for options in _CLIP_FILES]
        return Path(found[0]).parent if all(found) else None

    folder = snapshot()
    if folder is None and config.downloads_allowed:
        try:
            from huggingface_hub import snapshot_download

            snapshot_download(source, revision=config.clip_revision, cache_dir=_hub_cache_dir(config),
                              allow_patterns=["*.json", "*.txt", "model.safetensors"])
            folder = snapshot()
            if folder is None:  # openai/clip-vit-base-patch32's main branch carries only pytorch_model.bin
                snapshot_download(source, revision=config.clip_revision, cache_dir=_hub_cache_dir(config),
                                  allow_patterns=["pytorch_model.bin"])
                folder = snapshot()
        except Exception as error:  # network, auth, missing repo: all end in the same instruction
            raise _clip_missing(config, f" (download failed: {error})") from error
    if folder is None:
        raise _clip_missing(config, "")
    return folder, {"clip_model": source, "clip_revision": folder.name}


def _clip_missing(config: EvaluatorConfig, reason: str) -> MissingAssetError:
    revision = f" --revision {config.clip_revision}" if config.clip_revision else ""
    return MissingAssetError(
        f"CLIP checkpoint {config.clip_model!r} is not in the Hugging Face cache {_hub_cache_dir(config)}{reason}. "
        f"Get it with:\n  hf download {config.clip_model}{revision} --include '*.json' '*.txt' 'model.safetensors' 'pytorch_model.bin'\n"
        "or set evaluators.clip_model to a local folder."
    )


def _q16_quick_gelu(config: EvaluatorConfig) -> bool:
    if config.q16_quick_gelu is not None:
        return config.q16_quick_gelu
    from open_clip.pretrained import get_pretrained_cfg

    tag_cfg = get_pretrained_cfg(config.q16_arch, config.q16_pretrained) if config.q16_pretrained else {}
    # Without a tag (random or file weights) assume OpenAI weights, which is what Q16 was trained on.
    return bool(tag_cfg.get("quick_gelu", True))


def resolve_q16_checkpoint(config: EvaluatorConfig) -> tuple[str | None, dict]:
    """Local open_clip weights file for the Q16 image encoder (None = random weights) and its identity."""
    pretrained = config.q16_pretrained
    if not pretrained:
        return None, {"q16_weights": "random (pretrained=None, tests only)"}
    if Path(pretrained).is_file():
        return str(Path(pretrained).resolve()), {"q16_weights": str(Path(pretrained).resolve())}
    from open_clip.pretrained import get_pretrained_cfg

    tag_cfg = get_pretrained_cfg(config.q16_arch, pretrained)
    if not tag_cfg.get("hf_hub"):
        raise ConfigError(f"q16_pretrained={pretrained!r} is neither an open_clip tag with Hub weights for "
                          f"{config.q16_arch} nor an existing file")
    # open_clip's convention: "org/repo/" means the default file names, "org/repo/file" one named file.
    repo_id, filename = os.path.split(tag_cfg["hf_hub"])
    candidates = (filename,) if filename else _OPEN_CLIP_FILES

    def cached() -> str | None:
        return next((p for name in candidates if (p := _cached(repo_id, name, None, config))), None)

    path = cached()
    if path is None and config.downloads_allowed:
        from huggingface_hub import hf_hub_download

        errors = []
        for name in candidates:
            try:
                path = hf_hub_download(repo_id, name, cache_dir=_hub_cache_dir(config))
                break
            except Exception as error:  # try the next file name; report all failures below
                errors.append(f"{name}: {error}")
        if path is None:
            raise _q16_missing(config, repo_id, candidates, f" (download failed: {'; '.join(errors)})")
    if path is None:
        raise _q16_missing(config, repo_id, candidates, "")
    return path, {"q16_weights": f"{repo_id} ({pretrained})", "q16_revision": Path(path).parent.name}


def _q16_missing(config: EvaluatorConfig, repo_id: str, names: tuple[str, ...], reason: str) -> MissingAssetError:
    return MissingAssetError(
        f"open_clip {config.q16_arch} '{config.q16_pretrained}' weights ({repo_id}) are not in the Hugging Face cache "
        f"{_hub_cache_dir(config)}{reason}. Get them with:\n  hf download {repo_id} {names[0]}\n"
        "or set evaluators.q16_pretrained to a local weights file."
    )


def resolve_q16_prompts(config: EvaluatorConfig) -> Path:
    path = config.q16_prompts_path
    if path.is_file() or converted_path(path).is_file():
        return path
    if config.downloads_allowed and path.suffix != ".safetensors":
        try:
            import urllib.request

            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial")
            urllib.request.urlretrieve(Q16_PROMPTS_URL, partial)
            os.replace(partial, path)
            return path
        except Exception as error:  # any network failure ends in the manual instruction
            reason = f" (download failed: {error})"
    else:
        reason = ""
    raise MissingAssetError(
        f"Q16 prompt file not found at {path}{reason}. Get it with:\n"
        f"  mkdir -p {path.parent} && curl -L -o {path} {Q16_PROMPTS_URL}\n"
        "or set evaluators.q16_prompts to its path."
    )


def resolve_inception(config: EvaluatorConfig) -> Path:
    from respodiff.evaluation.classifiers import INCEPTION_FILE

    folder = config.inception_path
    target = folder / INCEPTION_FILE
    if target.is_file():
        return folder
    reason = ""
    if config.downloads_allowed:
        try:
            from cleanfid.downloads_helper import check_download_inception

            folder.mkdir(parents=True, exist_ok=True)
            check_download_inception(fpath=str(folder))
            return folder
        except Exception as error:  # any network failure ends in the manual instruction
            target.unlink(missing_ok=True)  # clean-fid writes straight to the final name
            reason = f" (download failed: {error})"
    raise MissingAssetError(
        f"clean-fid's Inception weights are not at {target}{reason}. Get them with:\n"
        f"  mkdir -p {folder} && curl -L -o {target} {INCEPTION_URL}\n"
        "or set evaluators.inception_dir to the folder holding them."
    )


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


def check_evaluator_assets(config: EvaluatorConfig, requires: Iterable[str]) -> None:
    """Fail fast (before any generation) when a required evaluator's files are missing."""
    requires = set(requires)
    unknown = requires - set(COMPONENTS)
    if unknown:
        raise ConfigError(f"unknown evaluator components {sorted(unknown)}; known: {list(COMPONENTS)}")
    if "clip" in requires:
        resolve_clip_folder(config)
    if "q16" in requires:
        resolve_q16_checkpoint(config)
        resolve_q16_prompts(config)
    if "nudenet" in requires and config.nudenet_model and not Path(config.nudenet_model).is_file():
        raise MissingAssetError(f"NudeNet model file {config.nudenet_model} does not exist; unset "
                                "evaluators.nudenet_model to use the model shipped in the nudenet package")
    if "fid" in requires and config.fid_features == "inception":
        resolve_inception(config)


class Evaluators:
    """Lazy access to the evaluation models; see the module docstring for production vs test construction."""

    def __init__(self, config: EvaluatorConfig | None = None, *, clip=None, q16=None, nudenet=None, fid=None):
        self.config = config or EvaluatorConfig()
        self._components: dict[str, Any] = {"clip": clip, "q16": q16, "nudenet": nudenet, "fid": fid}
        self._injected = {name for name, value in self._components.items() if value is not None}
        self._identity: dict[str, dict] = {}

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None, *, device: str | None = None) -> Evaluators:
        """From a benchmark's settings or the whole eval config (see EvaluatorConfig.from_settings)."""
        return cls(EvaluatorConfig.from_settings(settings, device=device))

    def check(self, requires: Iterable[str]) -> None:
        check_evaluator_assets(self.config, set(requires) - self._injected)

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

        folder, identity = resolve_clip_folder(self.config)
        return ClipScorer.from_folder(folder, device=self.config.resolved_device,
                                      batch_size=self.config.batch_size, identity=identity)

    def _load_q16(self):
        from respodiff.evaluation.classifiers import Q16Classifier

        checkpoint, identity = resolve_q16_checkpoint(self.config)
        with _seeded(enabled=checkpoint is None):
            return Q16Classifier.load(self.config.q16_arch, checkpoint, resolve_q16_prompts(self.config),
                                      quick_gelu=_q16_quick_gelu(self.config), device=self.config.resolved_device,
                                      batch_size=self.config.batch_size, identity=identity)

    def _load_nudenet(self):
        from respodiff.evaluation.classifiers import NudeNetClassifier

        return NudeNetClassifier(self.config.nudenet_threshold, self.config.nudenet_classes,
                                 model_path=self.config.nudenet_model)

    def _load_fid(self):
        if self.config.fid_features == "quadrant-colours":
            from respodiff.evaluation.testing import QuadrantColours

            extractor, extractor_id = QuadrantColours(), QuadrantColours.identity
        else:
            from respodiff.evaluation.classifiers import load_inception

            extractor, extractor_id = load_inception(resolve_inception(self.config), self.config.resolved_device)
        return FidScorer(extractor, extractor_id, self.config.stats_path, mode=self.config.fid_mode,
                         device=self.config.resolved_device, batch_size=self.config.batch_size,
                         num_workers=self.config.fid_num_workers)

    def identity(self, requires: Iterable[str]) -> dict[str, Any]:
        """Who scored the images: checkpoint names and revisions, thresholds, file hashes, library versions."""
        from importlib.metadata import PackageNotFoundError, version

        out: dict[str, Any] = {}
        packages = {"clip": ("transformers",), "q16": ("open_clip_torch",), "nudenet": ("onnxruntime",),
                    "fid": ("clean-fid",)}
        versions = {"torch": version("torch")}
        for name in sorted(set(requires)):
            component = self._get(name)
            out.update(component.identity() if hasattr(component, "identity") else {name: type(component).__name__})
            for package in packages.get(name, ()):
                try:
                    versions[package] = version(package)
                except PackageNotFoundError:
                    versions[package] = None
        out["versions"] = versions
        out["scale"] = self.config.scale
        stand_ins = sorted(set(requires) & {"clip", "q16", "fid"}) if self.config.scale != "real" else []
        if stand_ins or self.config.scale == "tiny":
            # Put where every reader of a result sees it: these evaluators are random or weightless stand-ins.
            out["stand_ins"] = stand_ins
            out["warning"] = STAND_IN_WARNING
        if self.config.extra:
            out["notes"] = dict(self.config.extra)
        return out

    def describe_config(self) -> dict[str, Any]:
        return asdict(self.config)
