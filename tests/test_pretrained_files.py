"""Module folders on disk: recorded file hashes and UNet, local and Hub-cache loading, model card, export, the
README example."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch

from respodiff import HSpaceModules
from respodiff.errors import CheckpointMismatchError, MissingAssetError
from respodiff.export import main as export_main
from respodiff.models import ensure_tiny_model
from respodiff.modules import METADATA_FILE, HSpaceTransform, TransformationSet
from tests.conftest import tiny_spec

REPO = Path(__file__).resolve().parent.parent
H_SHAPE = (64, 8, 8)
RESULT = {
    "schema": "respodiff.result/1",
    "benchmark": "winobias",
    "metrics": [
        {"name": "devrat", "value": 0.125, "ci_low": 0.05, "ci_high": 0.2, "n": 40, "group": None},
        {"name": "devrat", "value": 0.5, "n": 4, "group": {"profession": "nurse"}},
    ],
}


def gender_set() -> TransformationSet:
    modules = {
        name: {"ram": HSpaceTransform(channels=64, height=8, width=8, init_scale=2.0, seed=seed),
               "sam": HSpaceTransform(channels=64, height=8, width=8, seed=seed + 5)}
        for seed, name in enumerate(["man", "woman"])
    }
    return TransformationSet(modules, {"h_shape": list(H_SHAPE), "base_model": "tiny", "kind": "fairness",
                                       "parametrization": "constant", "iterations": 2})


@pytest.fixture
def run_folder(tmp_path, tiny_pipe) -> Path:
    """A run folder as `run.py` leaves it: modules/ (saved with the UNet's record) and results/."""
    run = tmp_path / "run"
    gender_set().save(run / "modules", unet=tiny_pipe.unet)
    (run / "results").mkdir()
    (run / "results" / "winobias.json").write_text(json.dumps(RESULT))
    return run


def outputs(modules: TransformationSet) -> torch.Tensor:
    h = torch.randn(2, *H_SHAPE, generator=torch.Generator().manual_seed(0))
    return torch.stack([modules.transformation(concept)(h) for concept in modules.concepts])


def test_save_records_every_file_and_the_unet(run_folder, tiny_pipe):
    metadata = json.loads((run_folder / "modules" / METADATA_FILE).read_text())
    assert sorted(metadata["files"]) == sorted(
        f"{concept}/{part}/{name}" for concept in ("man", "woman") for part in ("ram", "sam")
        for name in ("config.json", "diffusion_pytorch_model.safetensors")
    )
    assert metadata["unet_class"] == "UNet2DConditionModel"
    assert metadata["unet_config"]["block_out_channels"] == [32, 64]
    # The same hash ModelSpec.architecture() shows (its first 12 digits) for the tiny model's config.json.
    config = json.loads((ensure_tiny_model(tiny_spec(Path(tiny_pipe.name_or_path).parent.parent)) / "unet" /
                         "config.json").read_text())
    from respodiff.io import canonical_hash

    assert metadata["unet_config_sha256"] == canonical_hash({k: v for k, v in config.items() if not k[0] == "_"})


@pytest.mark.parametrize("damage", ["changed", "missing"])
def test_a_changed_or_missing_module_file_is_refused_by_name(run_folder, damage):
    weights = run_folder / "modules" / "woman" / "sam" / "diffusion_pytorch_model.safetensors"
    if damage == "changed":
        data = bytearray(weights.read_bytes())
        data[-1] ^= 1
        weights.write_bytes(bytes(data))
    else:
        weights.unlink()
    with pytest.raises(CheckpointMismatchError, match="woman/sam/diffusion_pytorch_model.safetensors") as error:
        TransformationSet.load(run_folder / "modules")
    assert "new folder" in str(error.value) and "delete" not in str(error.value)


def test_folders_saved_before_the_new_keys_still_load(run_folder, tiny_pipe):
    path = run_folder / "modules" / METADATA_FILE
    metadata = json.loads(path.read_text())
    for key in ("files", "unet_class", "unet_config", "unet_config_sha256"):
        del metadata[key]
    path.write_text(json.dumps(metadata))
    loaded = HSpaceModules.from_pretrained(run_folder / "modules")
    assert torch.equal(outputs(loaded.sets), outputs(gender_set()))
    loaded.apply(tiny_pipe).remove()  # no UNet record: nothing to refuse


def test_local_folder_and_offline_hub_cache_load_the_same_modules(run_folder, tmp_path, monkeypatch):
    local = HSpaceModules.from_pretrained(run_folder / "modules")
    assert torch.equal(outputs(local.sets), outputs(gender_set()))

    # A Hub-style cache as huggingface_hub leaves it, populated without any network.
    cache, revision = tmp_path / "hub", "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--respodiff--tiny-gender"
    shutil.copytree(run_folder / "modules", repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    hub = HSpaceModules.from_pretrained("respodiff/tiny-gender", cache_dir=cache)
    assert hub.source == repo / "snapshots" / revision
    assert torch.equal(outputs(hub.sets), outputs(local.sets))
    assert HSpaceModules.from_pretrained("respodiff/tiny-gender", revision=revision, cache_dir=cache).concepts == [
        "man", "woman"]
    with pytest.raises(MissingAssetError, match="respodiff/other.*offline"):
        HSpaceModules.from_pretrained("respodiff/other", cache_dir=cache)


def test_export_writes_a_loadable_folder_with_a_model_card(run_folder, tmp_path, capsys):
    out = tmp_path / "shared"
    assert export_main([str(run_folder), str(out)]) == 0
    exported = HSpaceModules.from_pretrained(out)
    assert torch.equal(outputs(exported.sets), outputs(gender_set()))
    assert exported.metadata["unet_config_sha256"]  # the UNet record travels with the modules
    card = (out / "README.md").read_text()
    assert "base model: `tiny`" in card and "| parametrization | constant |" in card
    assert "| winobias | devrat | 0.125 | 0.05 - 0.2 | 40 |" in card
    assert "nurse" not in card  # only overall values, not per-group ones
    assert "respodiff.HSpaceModules.from_pretrained" in card and "image i gets concept i % (concepts)" in card

    assert export_main([str(run_folder), str(out)]) == 2  # never into a folder that holds something
    assert export_main([str(tmp_path / "nothing"), str(tmp_path / "new")]) == 2
    assert "no trained modules" in capsys.readouterr().err


def test_push_to_hub_uploads_the_saved_folder(run_folder, monkeypatch):
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            self.token = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls.append(("create", repo_id, private, exist_ok))

        def upload_folder(self, repo_id, folder_path, commit_message):
            uploaded = HSpaceModules.from_pretrained(folder_path)  # the folder is complete at upload time
            calls.append(("upload", repo_id, uploaded.concepts, (Path(folder_path) / "README.md").is_file()))
            return "commit"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert HSpaceModules.from_pretrained(run_folder / "modules").push_to_hub("me/gender", private=True) == "commit"
    assert calls == [("create", "me/gender", True, True), ("upload", "me/gender", ["man", "woman"], True)]


def test_readme_example_runs_as_written(run_folder, tiny_pipe, tmp_path, monkeypatch):
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Using trained modules in your own code", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert code.count('"CompVis/stable-diffusion-v1-4"') == 1 and code.count('"my-gender-modules"') == 1
    modules = tmp_path / "my-gender-modules"
    assert export_main([str(run_folder), str(modules)]) == 0
    code = code.replace('"CompVis/stable-diffusion-v1-4"', repr(tiny_pipe.name_or_path))
    code = code.replace('"my-gender-modules"', repr(str(modules)))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    fair, base = namespace["fair"], namespace["base"]
    assert len(fair) == len(base) == 2
    assert not any(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(fair, base))
