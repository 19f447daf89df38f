"""Azure AutoML's data layouts as its notebooks write them (odFridgeObjects): the VOC converter on annotations/
beside images/, MLTable folders and files, image_url relative, ../, absolute, file:// and azureml://, and the
data set root that holds them."""

import json
from pathlib import Path

import pytest
from PIL import Image

from autodetect.cli import main
from autodetect.data.dataset import read_jsonl
from autodetect.data.split import load_datasets
from autodetect.errors import DataError

AZUREML = ("azureml://subscriptions/0000/resourcegroups/rg/workspaces/ws/datastores/workspaceblobstore/"
           "paths/odFridgeObjects/")
VOC = """<annotation><folder>images</folder><filename>{n}.jpg</filename>
<path>C:\\Users\\me\\odFridgeObjects\\images\\{n}.jpg</path><size><width>64</width><height>48</height><depth>3</depth></size>
<object><name>{label}</name><difficult>0</difficult><bndbox><xmin>8</xmin><ymin>6</ymin><xmax>40</xmax><ymax>30</ymax></bndbox></object>
</annotation>"""
MLTABLE = """paths:
  - file: ./{name}
transformations:
  - read_json_lines:
      encoding: utf8
      invalid_lines: error
      include_path_column: false
  - convert_column_types:
      - columns: image_url
        column_type: stream_info
"""


def fridge(tmp_path: Path, url) -> Path:
    """data/odFridgeObjects/{images,annotations} and data/training-mltable-folder/{MLTable,train_annotations.jsonl}."""
    data = tmp_path / "data"
    (data / "odFridgeObjects" / "images").mkdir(parents=True)
    (data / "odFridgeObjects" / "annotations").mkdir()
    lines = []
    for n, label in ((1, "milk_bottle"), (2, "can"), (3, "carton")):
        Image.new("RGB", (64, 48), (n * 60, 90, 30)).save(data / "odFridgeObjects" / "images" / f"{n}.jpg")
        (data / "odFridgeObjects" / "annotations" / f"{n}.xml").write_text(VOC.format(n=n, label=label))
        lines.append({"image_url": url(data, f"images/{n}.jpg"), "image_details": {"format": "jpg", "width": "64px",
                      "height": "48px"}, "label": [{"label": label, "topX": 0.125, "topY": 0.125, "bottomX": 0.625,
                                                    "bottomY": 0.625, "isCrowd": 0}]})
    folder = data / "training-mltable-folder"
    folder.mkdir()
    (folder / "train_annotations.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (folder / "MLTable").write_text(MLTABLE.format(name="train_annotations.jsonl"))
    return folder


def test_voc_converter_finds_images_as_azure_does(tmp_path, capsys):
    fridge(tmp_path, lambda data, rel: rel)
    base = tmp_path / "data" / "odFridgeObjects"
    out = base / "train_annotations.jsonl"
    assert main(["convert", "--from", "voc", str(base / "annotations"), "--out", str(out)]) == 0
    assert "3 images" in capsys.readouterr().out
    assert [json.loads(line)["image_url"] for line in out.read_text().splitlines()] == \
        ["images/1.jpg", "images/2.jpg", "images/3.jpg"]
    (base / "images" / "2.jpg").unlink()
    assert main(["convert", "--from", "voc", str(base / "annotations"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "2.xml" in err and "no such image '2.jpg'" in err and "--images" in err


@pytest.mark.parametrize("where", ["folder", "file"])
def test_mltable_with_dotdot_urls_needs_a_wider_root(tmp_path, where):
    folder = fridge(tmp_path, lambda data, rel: f"../odFridgeObjects/{rel}")
    location = folder if where == "folder" else folder / "MLTable"
    with pytest.raises(DataError) as refused:
        read_jsonl(location)
    assert f"outside the data set root {folder}" in str(refused.value) and "spec.dataset.root" in str(refused.value)
    dataset = read_jsonl(location, root=folder.parent)
    assert len(dataset) == 3 and dataset.classes == ["can", "carton", "milk_bottle"]
    assert dataset.records[0].path == folder.parent / "odFridgeObjects" / "images" / "1.jpg"


@pytest.mark.parametrize("scheme", ["", "file://"])
def test_absolute_urls_inside_the_root(tmp_path, scheme):
    folder = fridge(tmp_path, lambda data, rel: f"{scheme}{data}/odFridgeObjects/{rel}")
    assert len(read_jsonl(folder / "train_annotations.jsonl", root=tmp_path / "data")) == 3
    with pytest.raises(DataError, match="outside the data set root"):
        read_jsonl(folder / "train_annotations.jsonl")


def test_azureml_urls_map_onto_the_root_through_the_prefix(tmp_path, capsys, monkeypatch):
    folder = fridge(tmp_path, lambda data, rel: AZUREML + rel)
    with pytest.raises(DataError, match="imageUrlPrefix"):
        read_jsonl(folder)
    root = tmp_path / "data" / "odFridgeObjects"
    assert len(read_jsonl(folder, root=root, prefix=AZUREML)) == 3
    assert main(["dataset", "validate", str(folder), "--root", str(root), "--image-url-prefix", AZUREML]) == 0
    assert capsys.readouterr().out.startswith("OK")
    assert main(["convert", "--to", "coco", str(folder), "--root", str(root), "--image-url-prefix", AZUREML,
                 "--out", str(tmp_path / "coco.json")]) == 0
    # On a claim the claim is the root, so ../ inside it is fine and the prefix maps onto the claim.
    monkeypatch.setenv("AUTODETECT_PVC_ROOT", str(tmp_path))
    uri = "pvc://data/training-mltable-folder"
    train, val = load_datasets(uri, uri, prefix=AZUREML.removesuffix("odFridgeObjects/"))
    assert len(train) == len(val) == 3
