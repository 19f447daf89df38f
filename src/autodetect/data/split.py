"""The validation split used when no validation set is given: seeded, deterministic, and
stratified by each image's rarest label, so rare classes reach both sides where they can."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from autodetect.data.dataset import Dataset, ImageRecord, read_jsonl
from autodetect.errors import DataError, SpecError
from autodetect.storage import resolve_uri

MIN_IMAGES = 10  # Azure AutoML refuses fewer training images too
DEFAULT_FRACTION = 0.2


def stratum(record: ImageRecord, counts: Counter) -> str:
    """The rarest label of an image (ties by name); "" for an image without boxes."""
    labels = {b.label for b in record.boxes}
    return min(labels, key=lambda label: (counts[label], label)) if labels else ""


def allocate(sizes: dict[str, int], total: int) -> dict[str, int]:
    """How many of each stratum go to validation: proportional (largest remainder), leaving each
    stratum at least one training image while other strata can still give."""
    n = sum(sizes.values())
    quotas = {key: size * total / n for key, size in sizes.items()}
    taken = {key: min(int(quotas[key]), max(sizes[key] - 1, 0)) for key in sizes}
    by_remainder = sorted(sizes, key=lambda key: (-(quotas[key] - taken[key]), key))
    for keep_one in (1, 0):
        grew = True
        while grew and sum(taken.values()) < total:
            grew = False
            for key in by_remainder:
                if sum(taken.values()) < total and taken[key] < sizes[key] - keep_one:
                    taken[key] += 1
                    grew = True
    return taken


def split_dataset(dataset: Dataset, fraction: float = DEFAULT_FRACTION, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(train, validation): round(fraction * images) images (at least 1) go to validation; both keep
    the file order and the full class list. The same data, fraction and seed give the same split."""
    if not 0.0 < fraction < 1.0:
        raise SpecError("validationSplit", f"must be between 0 and 1 (exclusive), got {fraction}")
    if len(dataset) < MIN_IMAGES:
        raise DataError(f"{len(dataset)} images is too few to split off a validation set; at least {MIN_IMAGES} "
                        "are needed (or give a validation set)", file=dataset.source or None)
    counts = Counter(b.label for r in dataset.records for b in r.boxes)
    strata: dict[str, list[int]] = {}
    for index, record in enumerate(dataset.records):
        strata.setdefault(stratum(record, counts), []).append(index)
    total = min(max(1, round(fraction * len(dataset))), len(dataset) - 1)
    rng = random.Random(seed)
    chosen: set[int] = set()
    for key, take in allocate({k: len(v) for k, v in strata.items()}, total).items():
        members = strata[key][:]
        rng.shuffle(members)
        chosen.update(members[:take])
    train = [r for i, r in enumerate(dataset.records) if i not in chosen]
    validation = [r for i, r in enumerate(dataset.records) if i in chosen]
    return (Dataset(train, dataset.source, list(dataset.classes)),
            Dataset(validation, dataset.source, list(dataset.classes)))


def load_datasets(training: str | Path, validation: str | Path | None = None, split: float = DEFAULT_FRACTION,
                  seed: int = 0, check_images: bool = True, root: str | None = None,
                  prefix: str | None = None) -> tuple[Dataset, Dataset]:
    """The training and validation sets of a trial: both read (URIs or paths), or the validation set
    split off the training set when none is given. Both carry the same sorted class list.
    Images must lie under the data set root: the claim for pvc://, else root (a URI), else the JSONL's folder."""
    train = read_jsonl(_local(training), check_images, root=data_root(training, root), prefix=prefix)
    if validation is None:
        return split_dataset(train, split, seed)
    val = read_jsonl(_local(validation), check_images, root=data_root(validation, root), prefix=prefix)
    classes = sorted(set(train.classes) | set(val.classes))
    train.classes, val.classes = classes, list(classes)
    return train, val


def data_root(location: str | Path, root: str | None = None) -> Path | None:
    if isinstance(location, str) and location.startswith("pvc://"):
        claim = location.removeprefix("pvc://").split("/", 1)[0]
        return resolve_uri(f"pvc://{claim}/")
    return resolve_uri(root) if root else None


def _local(location: str | Path) -> Path:
    return location if isinstance(location, Path) else resolve_uri(location)
