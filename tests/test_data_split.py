"""The validation split: seeded, deterministic, stratified by each image's rarest label."""

import json
from pathlib import Path

import pytest

from autodetect.data.dataset import Box, Dataset, ImageRecord
from autodetect.data.split import MIN_IMAGES, allocate, load_datasets, split_dataset
from autodetect.data.synth import synthesize
from autodetect.errors import DataError, SpecError


def dataset(labels: list[list[str]], source: str = "train.jsonl") -> Dataset:
    records = [ImageRecord(f"images/{i}.png", Path(f"/d/images/{i}.png"), 64, 64, "png",
                           tuple(Box(label, 0.1, 0.1, 0.5, 0.5) for label in names)) for i, names in enumerate(labels)]
    return Dataset(records, source=source)


def urls(ds: Dataset) -> list[str]:
    return [r.image_url for r in ds.records]


def test_a_fifth_goes_to_validation_deterministically_and_in_file_order():
    ds = dataset([["a"]] * 25)
    train, val = split_dataset(ds, seed=3)
    assert (len(train), len(val)) == (20, 5)
    assert sorted(urls(train) + urls(val)) == sorted(urls(ds))
    assert urls(val) == sorted(urls(val), key=lambda u: int(u.split("/")[1].split(".")[0]))
    assert urls(split_dataset(ds, seed=3)[1]) == urls(val)
    assert any(urls(split_dataset(ds, seed=s)[1]) != urls(val) for s in range(4, 10))
    assert train.classes == val.classes == ["a"]


def test_a_rare_class_reaches_both_sides():
    ds = dataset([["common"]] * 16 + [["common", "rare"]] * 4)
    for seed in range(10):
        train, val = split_dataset(ds, seed=seed)
        assert len(val) == 4
        assert sum("rare" in {b.label for b in r.boxes} for r in val.records) == 1
        assert sum("rare" in {b.label for b in r.boxes} for r in train.records) == 3
    assert split_dataset(ds)[1].classes == ["common", "rare"]


def test_allocation_leaves_each_stratum_a_training_image_while_it_can():
    assert allocate({"a": 16, "b": 4}, 4) == {"a": 3, "b": 1}
    assert allocate({"a": 9, "b": 1}, 2) == {"a": 2, "b": 0}
    assert sum(allocate({k: 1 for k in "abcdefghij"}, 2).values()) == 2  # nothing else to give


def test_fewer_than_ten_images_are_refused_naming_the_file():
    with pytest.raises(DataError, match=r"^train\.jsonl: 9 images is too few .* at least 10"):
        split_dataset(dataset([["a"]] * (MIN_IMAGES - 1)))
    assert len(split_dataset(dataset([["a"]] * MIN_IMAGES))[1]) == 2


@pytest.mark.parametrize("fraction", [0, 1, -0.2, 1.5])
def test_an_impossible_fraction_is_refused(fraction):
    with pytest.raises(SpecError, match="validationSplit"):
        split_dataset(dataset([["a"]] * 20), fraction)


def test_load_datasets_splits_or_reads_both(tmp_path):
    path = synthesize(tmp_path / "d", classes=2, images=12, size=64, seed=1)
    train, val = load_datasets(str(path), None, 0.25, seed=0)
    assert (len(train), len(val)) == (9, 3)
    lines = path.read_text().splitlines()
    (tmp_path / "d" / "v.jsonl").write_text(json.dumps({**json.loads(lines[0]), "label": []}) + "\n")
    (tmp_path / "d" / "t.jsonl").write_text("\n".join(lines[1:3]) + "\n")
    train, val = load_datasets(tmp_path / "d" / "t.jsonl", f"file://{tmp_path / 'd' / 'v.jsonl'}")
    assert (len(train), len(val)) == (2, 1)
    assert val.classes == train.classes and train.classes
