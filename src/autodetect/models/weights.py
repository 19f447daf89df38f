"""Where pretrained weights come from. Nothing is downloaded implicitly: a trial names a file or URL
in `pretrained_weights`, or an operator drops files into $AUTODETECT_WEIGHTS_DIR; otherwise a trial
that asks for `pretrained: true` fails with a message saying how to fix it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from autodetect.errors import AutodetectError, WeightsUnavailable

WEIGHTS_DIR_ENV = "AUTODETECT_WEIGHTS_DIR"


def pretrained_weights_path(hyperparameters: dict[str, Any], file_names: Sequence[str]) -> Path | None:
    """The local file of the pretrained weights a trial asks for, or None with `pretrained: false`.

    `pretrained_weights` (a path or an http(s)/pvc/file URI) wins; else the first of `file_names`
    found in $AUTODETECT_WEIGHTS_DIR. Raises WeightsUnavailable when none can be had."""
    if not hyperparameters.get("pretrained"):
        return None
    model_name = hyperparameters["model_name"]
    uri = hyperparameters.get("pretrained_weights")
    if uri:
        from autodetect.storage import resolve_uri

        try:
            path = resolve_uri(uri)
        except AutodetectError as exc:
            raise WeightsUnavailable(_advice(model_name, f"pretrained_weights {uri!r} could not be fetched ({exc})")) from None
        if not path.is_file():
            raise WeightsUnavailable(_advice(model_name, f"pretrained_weights {uri!r}: no such file {path}"))
        return path
    directory = os.environ.get(WEIGHTS_DIR_ENV)
    if directory:
        for name in file_names:
            if (Path(directory) / name).is_file():
                return Path(directory) / name
        raise WeightsUnavailable(_advice(model_name, f"none of {', '.join(file_names)} is in ${WEIGHTS_DIR_ENV} ({directory})"))
    raise WeightsUnavailable(_advice(model_name, f"no pretrained_weights given and ${WEIGHTS_DIR_ENV} is not set"))


def _advice(model_name: str, why: str) -> str:
    return (f"pretrained weights for {model_name} are unavailable: {why}. Point the hyperparameter "
            f"pretrained_weights at a weights file (path or URL), put it in ${WEIGHTS_DIR_ENV}, "
            f"or set pretrained: false to train from scratch")
