"""Where the evaluation models' files come from: the Hugging Face cache, a local path, or a download when allowed.

`check_evaluator_assets(settings, requires)` (through every benchmark's `check_assets`, before any generation)
fails with a `MissingAssetError` naming the id, the cache folder and the command that fetches the file. The
`resolve_*` functions return local paths (and the identity of what they found) for `Evaluators` to load.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from respodiff.errors import ConfigError, MissingAssetError
from respodiff.evaluation.evaluator_settings import EvaluatorSettings
from respodiff.evaluation.q16_prompts import Q16_PROMPTS_URL, converted_path
from respodiff.io import temporary_sibling

COMPONENTS = ("clip", "q16", "nudenet", "fid")
INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/" + INCEPTION_FILE

# Files a transformers CLIP folder needs; each inner tuple lists alternatives.
_CLIP_FILES = (("config.json",), ("preprocessor_config.json", "processor_config.json"), ("tokenizer.json", "vocab.json"),
               ("model.safetensors", "pytorch_model.bin"))
_OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _hub_cache_dir(settings: EvaluatorSettings) -> str:
    from huggingface_hub import constants

    return settings.hf_cache_dir or constants.HF_HUB_CACHE


def _cached(repo_id: str, filename: str, revision: str | None, settings: EvaluatorSettings) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=_hub_cache_dir(settings), revision=revision)
    return found if isinstance(found, str) else None


def _missing_files(folder: Path, required: Iterable[tuple[str, ...]]) -> list[str]:
    return [" or ".join(options) for options in required if not any((folder / o).is_file() for o in options)]


def resolve_clip_folder(settings: EvaluatorSettings) -> tuple[Path, dict]:
    """A local folder with the CLIP checkpoint (a Hub snapshot or the configured folder) and its identity."""
    source, revision = settings.clip.model, settings.clip.revision
    if Path(source).is_dir():
        folder = Path(source)
        missing = _missing_files(folder, _CLIP_FILES)
        if missing:
            raise MissingAssetError(f"CLIP folder {folder} lacks {missing}; save a CLIPModel and CLIPProcessor "
                                    "there with save_pretrained, or set eval.evaluators.clip.model to a Hub id")
        return folder, {"clip_model": str(folder.resolve()), "clip_revision": None}

    def snapshot() -> Path | None:
        found = [next((p for name in options if (p := _cached(source, name, revision, settings))), None)
                 for options in _CLIP_FILES]
        return Path(found[0]).parent if all(found) else None

    folder = snapshot()
    if folder is None and settings.downloads_allowed:
        try:
            from huggingface_hub import snapshot_download

            snapshot_download(source, revision=revision, cache_dir=_hub_cache_dir(settings),
                              allow_patterns=["*.json", "*.txt", "model.safetensors"])
            folder = snapshot()
            if folder is None:  # openai/clip-vit-base-patch32's main branch carries only pytorch_model.bin
                snapshot_download(source, revision=revision, cache_dir=_hub_cache_dir(settings),
                                  allow_patterns=["pytorch_model.bin"])
                folder = snapshot()
        except Exception as error:  # network, auth, missing repo: all end in the same instruction
            raise _clip_missing(settings, f" (download failed: {error})") from error
    if folder is None:
        raise _clip_missing(settings, "")
    return folder, {"clip_model": source, "clip_revision": folder.name}


def _not_cached(settings: EvaluatorSettings, what: str, reason: str, command: str, instead: str) -> MissingAssetError:
    """Files missing from the Hub cache: where we looked, why the download failed, the command, the alternative."""
    return MissingAssetError(f"{what} not in the Hugging Face cache {_hub_cache_dir(settings)}{reason}. Get them "
                             f"with:\n  {command}\nor set {instead}.")


def _clip_missing(settings: EvaluatorSettings, reason: str) -> MissingAssetError:
    model, revision = settings.clip.model, settings.clip.revision
    revision_option = f" --revision {revision}" if revision else ""
    return _not_cached(settings, f"CLIP checkpoint {model!r} is", reason,
                       f"hf download {model}{revision_option} --include '*.json' '*.txt' 'model.safetensors' "
                       "'pytorch_model.bin'", "eval.evaluators.clip.model to a local folder")


def q16_quick_gelu(settings: EvaluatorSettings) -> bool:
    q16 = settings.q16
    if q16.quick_gelu is not None:
        return q16.quick_gelu
    from open_clip.pretrained import get_pretrained_cfg

    tag_cfg = {} if q16.random_weights else get_pretrained_cfg(q16.arch, q16.pretrained)
    # Without a tag (random or file weights) assume OpenAI weights, which is what Q16 was trained on.
    return bool(tag_cfg.get("quick_gelu", True))


def resolve_q16_checkpoint(settings: EvaluatorSettings) -> tuple[str | None, dict]:
    """Local open_clip weights file for the Q16 image encoder (None = random weights) and its identity."""
    q16 = settings.q16
    if q16.random_weights:
        return None, {"q16_weights": "random (q16.pretrained=random, tests only)"}
    pretrained = q16.pretrained
    if Path(pretrained).is_file():
        return str(Path(pretrained).resolve()), {"q16_weights": str(Path(pretrained).resolve())}
    from open_clip.pretrained import get_pretrained_cfg

    tag_cfg = get_pretrained_cfg(q16.arch, pretrained)
    if not tag_cfg.get("hf_hub"):
        raise ConfigError(f"eval.evaluators.q16.pretrained={pretrained!r} is neither an open_clip tag with Hub "
                          f"weights for {q16.arch} nor an existing file")
    # open_clip's convention: "org/repo/" means the default file names, "org/repo/file" one named file.
    repo_id, filename = os.path.split(tag_cfg["hf_hub"])
    candidates = (filename,) if filename else _OPEN_CLIP_FILES

    def cached() -> str | None:
        return next((p for name in candidates if (p := _cached(repo_id, name, None, settings))), None)

    path = cached()
    if path is None and settings.downloads_allowed:
        from huggingface_hub import hf_hub_download

        errors = []
        for name in candidates:
            try:
                path = hf_hub_download(repo_id, name, cache_dir=_hub_cache_dir(settings))
                break
            except Exception as error:  # try the next file name; report all failures below
                errors.append(f"{name}: {error}")
        if path is None:
            raise _q16_missing(settings, repo_id, candidates, f" (download failed: {'; '.join(errors)})")
    if path is None:
        raise _q16_missing(settings, repo_id, candidates, "")
    return path, {"q16_weights": f"{repo_id} ({pretrained})", "q16_revision": Path(path).parent.name}


def _q16_missing(settings: EvaluatorSettings, repo_id: str, names: tuple[str, ...], reason: str) -> MissingAssetError:
    return _not_cached(settings, f"open_clip {settings.q16.arch} '{settings.q16.pretrained}' weights ({repo_id}) are",
                       reason, f"hf download {repo_id} {names[0]}", "eval.evaluators.q16.pretrained to a local "
                       "weights file")


def resolve_q16_prompts(settings: EvaluatorSettings) -> Path:
    path = settings.q16_prompts_path
    if path.is_file() or converted_path(path).is_file():
        return path
    reason = ""
    if settings.downloads_allowed and path.suffix != ".safetensors":
        partial = temporary_sibling(path)
        try:
            import urllib.request

            path.parent.mkdir(parents=True, exist_ok=True)
            urllib.request.urlretrieve(Q16_PROMPTS_URL, partial)
            os.replace(partial, path)
            return path
        except Exception as error:  # any network failure ends in the manual instruction
            partial.unlink(missing_ok=True)
            reason = f" (download failed: {error})"
    raise MissingAssetError(
        f"Q16 prompt file not found at {path}{reason}. Get it with:\n"
        f"  mkdir -p {path.parent} && curl -L -o {path} {Q16_PROMPTS_URL}\n"
        "or set eval.evaluators.q16.prompts to its path."
    )


def resolve_inception(settings: EvaluatorSettings) -> Path:
    folder = settings.inception_path
    target = folder / INCEPTION_FILE
    if target.is_file():
        return folder
    reason = ""
    if settings.downloads_allowed:
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
        "or set eval.evaluators.fid.inception_dir to the folder holding them."
    )


def check_evaluator_assets(settings: EvaluatorSettings, requires: Iterable[str]) -> None:
    """Fail fast (before any generation) when a required evaluator's files are missing."""
    requires = set(requires)
    unknown = requires - set(COMPONENTS)
    if unknown:
        raise ConfigError(f"unknown evaluator components {sorted(unknown)}; known: {list(COMPONENTS)}")
    if "clip" in requires:
        resolve_clip_folder(settings)
    if "q16" in requires:
        resolve_q16_checkpoint(settings)
        resolve_q16_prompts(settings)
    if "nudenet" in requires and settings.nudenet.model and not Path(settings.nudenet.model).is_file():
        raise MissingAssetError(f"NudeNet model file {settings.nudenet.model} does not exist; unset "
                                "eval.evaluators.nudenet.model to use the model shipped in the nudenet package")
    if "fid" in requires and settings.fid.features == "inception":
        resolve_inception(settings)
