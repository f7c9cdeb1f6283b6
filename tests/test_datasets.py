"""Local datasets: prepare from files (and a stand-in Hub), manifests with checksums, validators, the CLI."""

from __future__ import annotations

import json
import sys
import types

import pandas as pd
import pytest

from respodiff import datasets
from respodiff.errors import MissingAssetError
from respodiff.evaluation.testing import i2p_like_table, write_coco_like_source


@pytest.fixture
def i2p_dir(tmp_path):
    source = tmp_path / "i2p_benchmark.csv"
    i2p_like_table(12).to_csv(source, index=False)
    out = tmp_path / "data" / "i2p"
    datasets.prepare("i2p", out, from_files=source, expected_count=12)
    return out


@pytest.fixture
def coco_dir(tmp_path):
    source = write_coco_like_source(tmp_path / "coco_src", n=6)
    out = tmp_path / "data" / "coco30k"
    datasets.prepare("coco30k", out, from_files=source, expected_count=6)
    return out


def test_prepare_i2p_from_files_writes_table_and_manifest(i2p_dir):
    manifest = datasets.verify("i2p", i2p_dir, expected_count=12)
    assert manifest["counts"]["prompts"] == 12 and manifest["counts"]["hard"] == 6
    assert sum(manifest["counts"]["categories"].values()) == sum(1 + i % 3 for i in range(12))
    table = datasets.load_i2p(i2p_dir, expected_count=12)
    assert table["prompt_id"].tolist() == [f"{i:05d}" for i in range(12)]
    assert table["hard"].dtype == bool and {"prompt", "categories", "sd_seed"} <= set(table.columns)


def test_prepare_coco_from_files_copies_images_byte_for_byte(tmp_path, coco_dir):
    manifest = datasets.verify("coco30k", coco_dir, expected_count=6)
    assert manifest["counts"] == {"captions": 6, "images": 6}
    table = datasets.load_coco(coco_dir, expected_count=6)
    assert table["caption"].tolist()[:2] == ["a photo of thing 0", "a photo of thing 1"]
    source = tmp_path / "coco_src" / "val2014" / "COCO_val2014_000000000003.jpg"
    copied = coco_dir / table.loc[3, "file"]
    assert copied.read_bytes() == source.read_bytes()
    assert table.loc[3, "reference"] == str(copied.resolve())


def test_validators_reject_wrong_count(i2p_dir):
    with pytest.raises(datasets.DatasetError, match="found 12 entries, expected 4703"):
        datasets.verify("i2p", i2p_dir)  # the canonical count unless a dev fixture says otherwise


def test_prepare_refuses_a_wrong_count(tmp_path):
    source = tmp_path / "i2p.csv"
    i2p_like_table(5).to_csv(source, index=False)
    with pytest.raises(datasets.DatasetError, match="expected 4703"):
        datasets.prepare("i2p", tmp_path / "out", from_files=source)
    assert not (tmp_path / "out" / datasets.MANIFEST).exists()


def test_validators_reject_a_missing_image(coco_dir):
    next((coco_dir / "images").iterdir()).unlink()
    with pytest.raises(MissingAssetError, match="1 of 7 files are missing"):
        datasets.verify("coco30k", coco_dir, expected_count=6)


def test_validators_reject_a_bad_checksum(coco_dir, i2p_dir):
    image = sorted((coco_dir / "images").iterdir())[2]
    data = bytearray(image.read_bytes())
    data[-3] ^= 0xFF  # same size, different content: only the full check sees it
    image.write_bytes(bytes(data))
    datasets.verify("coco30k", coco_dir, expected_count=6, full=False)
    with pytest.raises(datasets.DatasetError, match="checksum"):
        datasets.verify("coco30k", coco_dir, expected_count=6)
    table = i2p_dir / "prompts.parquet"
    pd.read_parquet(table).assign(prompt="changed").to_parquet(table, index=False)
    with pytest.raises(datasets.DatasetError, match="checksum"):
        datasets.verify("i2p", i2p_dir, expected_count=12, full=False)  # the table is always hashed


def test_missing_dataset_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("RESPODIFF_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(MissingAssetError, match=r"python -m respodiff\.datasets prepare i2p --from-hub"):
        datasets.verify("i2p")


def test_i2p_rejects_unknown_categories_and_missing_columns(tmp_path):
    table = i2p_like_table(3)
    table.loc[1, "categories"] = "violence, spam"
    with pytest.raises(datasets.DatasetError, match="spam"):
        datasets.normalise_i2p(table)
    with pytest.raises(datasets.DatasetError, match="hard"):
        datasets.normalise_i2p(table.drop(columns=["hard"]))


def test_from_hub_without_datasets_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails as if not installed
    with pytest.raises(MissingAssetError, match=r"respodiff\[datasets\]"):
        datasets.prepare("coco30k", tmp_path / "out", from_hub=True)


def test_prepare_i2p_from_a_stand_in_hub_file(tmp_path, monkeypatch):
    snapshot = tmp_path / "hub" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    i2p_like_table(4).to_csv(snapshot / datasets.I2P_HUB_FILE, index=False)
    calls = []
    monkeypatch.setattr(datasets.i2p, "_hub_file", lambda repo, name: calls.append((repo, name)) or snapshot / name)
    manifest = datasets.prepare("i2p", tmp_path / "i2p", from_hub=True, expected_count=4)
    assert calls == [("AIML-TUDA/i2p", "i2p_benchmark.csv")]
    assert manifest["source"] == "hub:AIML-TUDA/i2p@abc123/i2p_benchmark.csv" and manifest["counts"]["prompts"] == 4


def test_prepare_coco_from_a_stand_in_hub_dataset(tmp_path, monkeypatch):
    import io

    from PIL import Image

    def jpeg(i):
        buffer = io.BytesIO()
        Image.new("RGB", (16, 16), (20 * i, 0, 0)).save(buffer, format="JPEG")
        return buffer.getvalue()

    rows = [{"image": {"bytes": jpeg(i), "path": None}, "caption": f"caption {i}"} for i in range(3)]

    class FakeDataset(list):
        column_names = ["image", "caption"]

        def cast_column(self, column, feature):
            assert column == "image" and feature.decode is False
            return self

    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda hub_id, split: FakeDataset(rows)
    fake.Image = lambda decode=True: types.SimpleNamespace(decode=decode)
    monkeypatch.setitem(sys.modules, "datasets", fake)
    datasets.prepare("coco30k", tmp_path / "coco", from_hub=True, expected_count=3)
    table = datasets.load_coco(tmp_path / "coco", expected_count=3)
    assert table["file"].tolist() == ["images/00000.jpg", "images/00001.jpg", "images/00002.jpg"]
    assert (tmp_path / "coco" / "images" / "00001.jpg").read_bytes() == jpeg(1)  # stored bytes, not re-encoded


def test_cli_prepare_and_verify(tmp_path, capsys):
    source = tmp_path / "i2p.csv"
    i2p_like_table(7).to_csv(source, index=False)
    out = tmp_path / "i2p"
    assert datasets.main(["prepare", "i2p", "--from-files", str(source), "--out", str(out),
                          "--expected-count", "7"]) == 0
    assert datasets.main(["verify", "i2p", "--data-dir", str(out), "--expected-count", "7"]) == 0
    assert "i2p ok" in capsys.readouterr().out
    assert datasets.main(["verify", "i2p", "--data-dir", str(out)]) == 2
    assert "expected 4703" in capsys.readouterr().err
    manifest = json.loads((out / datasets.MANIFEST).read_text())
    assert manifest["schema"] == datasets.SCHEMA and len(manifest["files"]["prompts.parquet"]["sha256"]) == 64


def test_prepare_coco_from_the_public_scripts_export(tmp_path):
    # prompts.csv with a `captions` column only; row i's image is "<i>.jpg" beside it
    from respodiff.evaluation.testing import write_images

    source = tmp_path / "coco_export"
    write_images(source, [str(i) for i in range(3)], lambda i: (10 * i, 50, 90), suffix=".jpg")
    pd.DataFrame({"captions": ["a cat", "a dog", "a bird"]}).to_csv(source / "prompts.csv", index=False)
    datasets.prepare("coco30k", tmp_path / "coco", from_files=source, expected_count=3)
    table = datasets.load_coco(tmp_path / "coco", expected_count=3)
    assert table["caption"].tolist() == ["a cat", "a dog", "a bird"]
    assert (tmp_path / "coco" / table.loc[2, "file"]).read_bytes() == (source / "2.jpg").read_bytes()
