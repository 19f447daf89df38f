"""Data set statistics, checked against a small set worked out by hand."""

from pathlib import Path

from rich.console import Console

from autodetect.data.dataset import Box, Dataset, ImageRecord
from autodetect.data.stats import dataset_stats, render_stats


def test_counts_and_box_sizes_by_hand():
    records = [
        ImageRecord("a.png", Path("/a.png"), 100, 50, "png", (Box("can", 0.0, 0.0, 0.5, 0.5), Box("can", 0.1, 0.1, 0.2, 0.3))),
        ImageRecord("b.png", Path("/b.png"), 200, 100, "png", (Box("milk", 0.5, 0.0, 1.0, 1.0, is_crowd=True),)),
        ImageRecord("c.png", Path("/c.png"), 10, 10, "png", ()),
    ]
    stats = dataset_stats(Dataset(records, source="d.jsonl"))
    assert stats["images"] == 3 and stats["boxes"] == 3 and stats["images_without_boxes"] == 1
    assert stats["crowd_boxes"] == 1
    assert stats["classes"] == {"can": {"boxes": 2, "images": 1}, "milk": {"boxes": 1, "images": 1}}
    # widths 50, 10, 100 px; heights 25, 10, 100 px
    assert stats["box_width_px"] == {"min": 10.0, "median": 50.0, "max": 100.0}
    assert stats["box_height_px"] == {"min": 10.0, "median": 25.0, "max": 100.0}
    assert stats["box_width_fraction"] == {"min": 0.1, "median": 0.5, "max": 0.5}
    assert stats["box_height_fraction"] == {"min": 0.2, "median": 0.5, "max": 1.0}

    console = Console(record=True, width=100)
    console.print(render_stats(stats))
    text = console.export_text()
    assert "d.jsonl" in text and "milk" in text and "median" in text


def test_a_set_without_boxes_has_no_sizes():
    stats = dataset_stats(Dataset([ImageRecord("a.png", Path("/a.png"), None, None, None, ())]))
    assert stats["boxes"] == 0 and stats["box_width_px"] is None and stats["classes"] == {}
