"""The data commands end to end: dataset synth/stats/validate, convert both ways, visualize."""

import json

from PIL import Image

from autodetect.cli import main


def test_synth_stats_validate(tmp_path, capsys):
    assert main(["dataset", "synth", "--out", str(tmp_path / "d"), "--images", "12", "--size", "64", "--seed", "4"]) == 0
    jsonl = tmp_path / "d" / "annotations.jsonl"
    assert "12 images" in capsys.readouterr().out
    assert main(["dataset", "stats", "--json", str(jsonl)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["images"] == 12 and stats["boxes"] == sum(c["boxes"] for c in stats["classes"].values())
    assert main(["dataset", "stats", str(jsonl)]) == 0
    assert "box sizes" in capsys.readouterr().out
    assert main(["dataset", "validate", str(jsonl)]) == 0
    assert capsys.readouterr().out.startswith(f"OK {jsonl}: 12 images")

    (tmp_path / "d" / "images" / "0003.png").write_bytes(b"garbage")
    assert main(["dataset", "validate", str(jsonl)]) == 2
    assert f"{jsonl}:4:" in capsys.readouterr().err


def test_convert_both_ways(tmp_path, capsys):
    main(["dataset", "synth", "--out", str(tmp_path), "--images", "10", "--size", "64"])
    jsonl = tmp_path / "annotations.jsonl"
    for fmt, out in (("coco", tmp_path / "coco.json"), ("voc", tmp_path), ("yolo", tmp_path / "yolo")):
        assert main(["convert", "--to", fmt, str(jsonl), "--out", str(out)]) == 0
    assert main(["convert", "--from", "coco", str(tmp_path / "coco.json"), "--out", str(tmp_path / "c.jsonl")]) == 0
    assert main(["convert", "--from", "voc", str(tmp_path / "images"), "--out", str(tmp_path / "v.jsonl")]) == 0
    assert main(["convert", "--from", "yolo", str(tmp_path / "yolo"), "--images", str(tmp_path / "images"),
                 "--out", str(tmp_path / "y.jsonl")]) == 0
    for name in ("c.jsonl", "v.jsonl", "y.jsonl"):
        assert (tmp_path / name).read_text() == jsonl.read_text(), name
    assert "10 images" in capsys.readouterr().out
    assert main(["convert", "--from", "coco", str(tmp_path / "none.json"), "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "none.json: no such file" in capsys.readouterr().err


def test_visualize_both_ways(tmp_path, capsys):
    main(["dataset", "synth", "--out", str(tmp_path), "--images", "3", "--size", "64"])
    jsonl = tmp_path / "annotations.jsonl"
    assert main(["visualize", "--jsonl", str(jsonl), "--image", "images/0001.png", "--out", str(tmp_path / "a.png")]) == 0
    assert main(["visualize", "--jsonl", str(jsonl), "--image", "2", "--out", str(tmp_path / "b.png")]) == 0
    assert Image.open(tmp_path / "a.png").size == (64, 64)
    response = {"filename": "0000.png", "boxes": [
        {"box": {"topX": 0.1, "topY": 0.1, "bottomX": 0.6, "bottomY": 0.7}, "label": "circle", "score": 0.9}]}
    (tmp_path / "r.json").write_text(json.dumps(response))
    assert main(["visualize", "--image-file", str(tmp_path / "images" / "0000.png"), "--detections",
                 str(tmp_path / "r.json"), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").is_file()
    capsys.readouterr()
    assert main(["visualize", "--jsonl", str(jsonl), "--image", "7", "--out", str(tmp_path / "d.png")]) == 2
    assert "past the last line" in capsys.readouterr().err
    assert main(["visualize", "--image-file", str(tmp_path / "images" / "0000.png"), "--out", str(tmp_path / "e.png")]) == 2
    (tmp_path / "bad.json").write_text("{\n oops")
    assert main(["visualize", "--image-file", str(tmp_path / "images" / "0000.png"), "--detections",
                 str(tmp_path / "bad.json"), "--out", str(tmp_path / "e.png")]) == 2
    assert "bad.json:2: bad JSON" in capsys.readouterr().err


def test_stats_into_a_closed_pipe_ends_quietly(tmp_path):
    import os
    import subprocess
    import sys

    main(["dataset", "synth", "--out", str(tmp_path), "--images", "40", "--size", "32", "--classes", "6"])
    src = os.path.join(os.path.dirname(__file__), "..", "src")
    env = {**os.environ, "PYTHONPATH": os.path.abspath(src) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # The reader is gone before the command writes a byte, as `| head` is once it has its lines.
    proc = subprocess.Popen([sys.executable, "-m", "autodetect.cli", "dataset", "stats", "--json",
                             str(tmp_path / "annotations.jsonl")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and "Traceback" not in err and "BrokenPipe" not in err, err
