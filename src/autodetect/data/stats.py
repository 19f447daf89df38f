"""What is in a data set: images, boxes per class, box sizes (`autodetect dataset stats`)."""

from __future__ import annotations

from statistics import median

from autodetect.data.dataset import Dataset


def _spread(values: list[float], digits: int) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": round(min(values), digits), "median": round(median(values), digits), "max": round(max(values), digits)}


def dataset_stats(dataset: Dataset) -> dict:
    """Counts and box-size spreads (min/median/max), in pixels where the image size is known and as
    a fraction of the image."""
    boxes = [(record, box) for record in dataset.records for box in record.boxes]
    classes = {name: {"boxes": 0, "images": 0} for name in dataset.classes}
    for record in dataset.records:
        for label in {b.label for b in record.boxes}:
            classes.setdefault(label, {"boxes": 0, "images": 0})["images"] += 1
    for _, box in boxes:
        classes[box.label]["boxes"] += 1
    sized = [(r, b) for r, b in boxes if r.width and r.height]
    return {
        "file": dataset.source,
        "images": len(dataset),
        "images_without_boxes": sum(1 for r in dataset.records if not r.boxes),
        "boxes": len(boxes),
        "crowd_boxes": sum(1 for _, b in boxes if b.is_crowd),
        "classes": classes,
        "box_width_px": _spread([(b.bottom_x - b.top_x) * r.width for r, b in sized], 1),
        "box_height_px": _spread([(b.bottom_y - b.top_y) * r.height for r, b in sized], 1),
        "box_width_fraction": _spread([b.bottom_x - b.top_x for _, b in boxes], 4),
        "box_height_fraction": _spread([b.bottom_y - b.top_y for _, b in boxes], 4),
    }


def render_stats(stats: dict):
    """The stats as rich renderables (a summary, then one row per class)."""
    from rich.console import Group
    from rich.table import Table

    summary = Table(title=stats["file"] or "data set", show_header=False)
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    for key in ("images", "images_without_boxes", "boxes", "crowd_boxes"):
        summary.add_row(key.replace("_", " "), str(stats[key]))
    sizes = Table(title="box sizes")
    for column in ("", "min", "median", "max"):
        sizes.add_column(column, justify="right" if column else "left")
    for key in ("box_width_px", "box_height_px", "box_width_fraction", "box_height_fraction"):
        spread = stats[key] or {}
        sizes.add_row(key.removeprefix("box_").replace("_", " "), *(str(spread.get(k, "-")) for k in ("min", "median", "max")))
    classes = Table(title="classes")
    for column in ("class", "boxes", "images"):
        classes.add_column(column, justify="left" if column == "class" else "right")
    for name, counts in sorted(stats["classes"].items()):
        classes.add_row(name, str(counts["boxes"]), str(counts["images"]))
    return Group(summary, classes, sizes)
