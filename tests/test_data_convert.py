"""COCO / VOC / YOLO <-> JSONL: every converter round-trips, and bad sources are named precisely."""

import json
from pathlib import Path

import pytest
from PIL import Image

from autodetect.data.convert import convert_from_jsonl, convert_to_jsonl, read_voc, write_yolo
from autodetect.data.dataset import read_jsonl
from autodetect.errors import DataError


def png(path: Path, size=(100, 80)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 100, 110)).save(path)
    return path


def labels(jsonl: Path) -> list[list[dict]]:
    return [json.loads(text)["label"] for text in jsonl.read_text().splitlines()]


def coco_source(root: Path) -> Path:
    png(root / "images" / "a.png")
    png(root / "images" / "b.png", (50, 40))
    png(root / "images" / "empty.png")
    coco = {
        "images": [{"id": 10, "file_name": "a.png", "width": 100, "height": 80},
                   {"id": 11, "file_name": "b.png", "width": 50, "height": 40},
                   {"id": 12, "file_name": "empty.png"}],
        "categories": [{"id": 3, "name": "can"}, {"id": 7, "name": "milk bottle"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 3, "bbox": [10, 20, 30, 40], "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 7, "bbox": [80, 60, 30, 30], "iscrowd": 1},  # past the edge
            {"id": 3, "image_id": 11, "category_id": 7, "bbox": [0.5, 1.25, 12.75, 20], "iscrowd": 0},
        ],
    }
    path = root / "ann" / "instances.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(coco))
    return path


def test_coco_to_jsonl_values_and_round_trip(tmp_path):
    source = coco_source(tmp_path)
    first = tmp_path / "first.jsonl"
    dataset = convert_to_jsonl("coco", source, first, images=tmp_path / "images")
    assert dataset.classes == ["can", "milk bottle"]
    lines = [json.loads(t) for t in first.read_text().splitlines()]
    assert [x["image_url"] for x in lines] == ["images/a.png", "images/b.png", "images/empty.png"]
    assert lines[0]["image_details"] == {"format": "png", "width": 100, "height": 80}
    assert lines[0]["label"][0] == {"label": "can", "topX": 0.1, "topY": 0.25, "bottomX": 0.4, "bottomY": 0.75, "isCrowd": 0}
    assert lines[0]["label"][1] == {"label": "milk bottle", "topX": 0.8, "topY": 0.75, "bottomX": 1.0, "bottomY": 1.0,
                                    "isCrowd": 1}
    assert lines[2]["label"] == []

    back = convert_from_jsonl("coco", first, tmp_path / "back.json")
    coco = json.loads(back.read_text())
    assert coco["images"][0]["file_name"] == "images/a.png"
    assert coco["annotations"][0]["bbox"] == [10, 20, 30, 40]
    assert coco["annotations"][2]["bbox"] == [0.5, 1.25, 12.75, 20]
    second = tmp_path / "second.jsonl"
    convert_to_jsonl("coco", back, second)
    assert second.read_text() == first.read_text()
    read_jsonl(second)


def test_coco_errors_name_the_element(tmp_path):
    source = coco_source(tmp_path)
    coco = json.loads(source.read_text())
    coco["annotations"] += [
        {"id": 9, "image_id": 10, "category_id": 99, "bbox": [1, 1, 5, 5]},
        {"id": 10, "image_id": 10, "category_id": 3, "bbox": [1, 1, 5]},
        {"id": 11, "image_id": 42, "category_id": 3, "bbox": [1, 1, 5, 5]},
        {"id": 12, "image_id": 10, "category_id": 3, "bbox": [200, 1, 5, 5]},
    ]
    coco["images"] += [{"id": 13, "file_name": "gone.png", "width": 10, "height": 10},
                       {"id": 14, "file_name": "b.png", "width": 64, "height": 40}]
    source.write_text(json.dumps(coco))
    with pytest.raises(DataError) as info:
        convert_to_jsonl("coco", source, tmp_path / "out.jsonl", images=tmp_path / "images")
    message = str(info.value)
    assert "6 problems" in message
    assert "annotations[3] (id 9): category_id 99 is not in categories" in message
    assert "annotations[4] (id 10): bbox must be" in message
    assert "annotations[5] (id 11): image_id 42 is not in images" in message
    assert "annotations[6] (id 12): box" in message and "outside the 100x80 image" in message
    assert "images[3]" in message and "no such image" in message
    assert "images[4]" in message and "says 64x40" in message and "is 50x40" in message


def test_coco_bad_json_has_its_line(tmp_path):
    (tmp_path / "c.json").write_text('{\n "images": [\n  ,]}')
    with pytest.raises(DataError, match=r"c\.json:3: bad JSON"):
        convert_to_jsonl("coco", tmp_path / "c.json", tmp_path / "out.jsonl")


def test_the_jsonl_must_be_written_above_the_images(tmp_path):
    source = coco_source(tmp_path)
    with pytest.raises(DataError, match="not inside the output folder"):
        convert_to_jsonl("coco", source, tmp_path / "elsewhere" / "out.jsonl", images=tmp_path / "images")


VOC = """<annotation>
  <filename>{name}</filename>
  <size><width>100</width><height>80</height><depth>3</depth></size>
  <object><name>can</name><difficult>1</difficult><bndbox><xmin>10</xmin><ymin>20</ymin><xmax>40</xmax><ymax>60</ymax></bndbox></object>
  <object><name>carton</name><bndbox><xmin>50.5</xmin><ymin>0</ymin><xmax>100</xmax><ymax>79</ymax></bndbox></object>
</annotation>"""


def voc_source(root: Path) -> Path:
    for name in ("a.jpg", "b.jpg"):
        png(root / "voc" / name).rename(root / "voc" / name)
    (root / "voc" / "ann_a.xml").write_text(VOC.format(name="a.jpg"))
    (root / "voc" / "ann_b.xml").write_text(VOC.format(name="b.jpg").replace("<object><name>can", "<object><name>milk"))
    return root / "voc"


def test_voc_round_trip_keeps_difficult_boxes(tmp_path):
    source = voc_source(tmp_path)
    first = tmp_path / "first.jsonl"
    convert_to_jsonl("voc", source, first)
    assert labels(first)[0] == [
        {"label": "can", "topX": 0.1, "topY": 0.25, "bottomX": 0.4, "bottomY": 0.75, "isCrowd": 0},
        {"label": "carton", "topX": 0.505, "topY": 0.0, "bottomX": 1.0, "bottomY": 0.9875, "isCrowd": 0}]
    assert labels(first)[1][0]["label"] == "milk"
    out = convert_from_jsonl("voc", first, tmp_path / "xml")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.xml")) == ["voc/a.xml", "voc/b.xml"]
    second = tmp_path / "second.jsonl"
    convert_to_jsonl("voc", out, second, images=tmp_path)
    assert second.read_text() == first.read_text()


def test_voc_written_beside_the_images_reads_without_images_folder(tmp_path):
    source = voc_source(tmp_path)
    first = convert_to_jsonl("voc", source, tmp_path / "first.jsonl")
    convert_from_jsonl("voc", tmp_path / "first.jsonl", tmp_path)
    assert (source / "a.xml").is_file()
    again = read_voc(source, tmp_path / "again.jsonl")
    assert len(again) == 4  # the originals and the new files, each beside its image
    assert {r.boxes for r in again.records} == {r.boxes for r in first.records}


def test_voc_errors_name_file_and_line(tmp_path):
    source = voc_source(tmp_path)
    (source / "broken.xml").write_text("<annotation>\n<filename>a.jpg</filename>\n<size>\n</annotation>")
    (source / "nobox.xml").write_text(VOC.format(name="a.jpg").replace("<bndbox><xmin>10</xmin>", "<bbox><xmin>10</xmin>")
                                      .replace("</ymax></bndbox></object>\n  <object><name>carton",
                                               "</ymax></bbox></object>\n  <object><name>carton"))
    (source / "nan.xml").write_text(VOC.format(name="a.jpg").replace("<xmin>10</xmin>", "<xmin>ten</xmin>"))
    (source / "gone.xml").write_text(VOC.format(name="gone.jpg"))
    with pytest.raises(DataError) as info:
        convert_to_jsonl("voc", source, tmp_path / "out.jsonl")
    message = str(info.value)
    assert f"{source / 'broken.xml'}:4: bad XML" in message
    assert f"{source / 'nobox.xml'}: object[0]/bndbox is missing" in message
    assert f"{source / 'nan.xml'}: object[0]/bndbox/xmin must be a number, got 'ten'" in message
    assert f"{source / 'gone.xml'}:" in message and "no such image" in message


def yolo_source(root: Path, names_file: str = "data.yaml") -> Path:
    source = root / "yolo"
    png(source / "images" / "train" / "a.png")
    png(source / "images" / "train" / "b.png")
    png(source / "images" / "val" / "c.png")
    (source / "labels" / "train").mkdir(parents=True)
    (source / "labels" / "val").mkdir(parents=True)
    (source / "labels" / "train" / "a.txt").write_text("0 0.25 0.5 0.1 0.25\n1 0.5 0.5 1.0 1.0\n")
    (source / "labels" / "val" / "c.txt").write_text("\n2 0.1 0.2 0.3 0.2 0.2 0.4\n")  # a polygon; b has no file
    if names_file == "data.yaml":
        (source / "data.yaml").write_text("path: .\ntrain: images/train\nnames:\n  0: can\n  1: carton\n  2: milk\n")
    else:
        (source / names_file).write_text("can\ncarton\nmilk\n")
    return source


@pytest.mark.parametrize("names_file", ["data.yaml", "classes.txt"])
def test_yolo_round_trip(tmp_path, names_file):
    source = yolo_source(tmp_path, names_file)
    first = source / "first.jsonl"
    dataset = convert_to_jsonl("yolo", source, first)
    assert dataset.classes == ["can", "carton", "milk"]
    assert [r.image_url for r in dataset.records] == ["images/train/a.png", "images/train/b.png", "images/val/c.png"]
    assert labels(first)[0][0] == {"label": "can", "topX": 0.2, "topY": 0.375, "bottomX": 0.3, "bottomY": 0.625, "isCrowd": 0}
    assert labels(first)[1] == []
    assert labels(first)[2] == [{"label": "milk", "topX": 0.1, "topY": 0.2, "bottomX": 0.3, "bottomY": 0.4, "isCrowd": 0}]

    out = convert_from_jsonl("yolo", first, tmp_path / "out")
    assert (out / "labels" / "train" / "a.txt").read_text() == "0 0.25 0.5 0.1 0.25\n1 0.5 0.5 1 1\n"
    second = source / "second.jsonl"
    convert_to_jsonl("yolo", out, second, images=source / "images")
    assert second.read_text() == first.read_text()


def test_yolo_with_linked_images_is_a_complete_folder(tmp_path):
    source = yolo_source(tmp_path)
    dataset = convert_to_jsonl("yolo", source, source / "first.jsonl")
    out = write_yolo(dataset, tmp_path / "linked", images="link")
    assert (out / "images" / "train" / "a.png").is_symlink()
    again = convert_to_jsonl("yolo", out, out / "again.jsonl")
    assert [r.boxes for r in again.records] == [r.boxes for r in dataset.records]


def test_yolo_errors_name_file_and_line(tmp_path):
    source = yolo_source(tmp_path)
    (source / "labels" / "train" / "b.txt").write_text("0 0.5 0.5 0.2\n3 0.5 0.5 0.2 0.2\n0.5 0.5 0.5 0.2 0.2\n"
                                                      "0 0.5 0.5 0.2 inf\n0 2 2 0.2 0.2\n")
    (source / "labels" / "train" / "orphan.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DataError) as info:
        convert_to_jsonl("yolo", source, source / "out.jsonl")
    message = str(info.value)
    b = source / "labels" / "train" / "b.txt"
    assert f"{b}:1: expected `class cx cy w h`" in message
    assert f"{b}:2: class 3 is not one of the 3 names" in message
    assert f"{b}:3: class 0.5 is not one of" in message
    assert f"{b}:4: a non-finite number" in message
    assert f"{b}:5: box" in message and "outside" in message
    assert f"{source / 'labels' / 'train' / 'orphan.txt'}: a label file with no image" in message


def test_yolo_without_names_is_refused(tmp_path):
    source = yolo_source(tmp_path)
    (source / "data.yaml").unlink()
    with pytest.raises(DataError, match="no class names"):
        convert_to_jsonl("yolo", source, source / "out.jsonl")


def test_an_unknown_format(tmp_path):
    with pytest.raises(DataError, match="unknown format"):
        convert_to_jsonl("kitti", tmp_path, tmp_path / "out.jsonl")
