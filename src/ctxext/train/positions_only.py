"""Train only the rows a stretch added to a learned position table (LongEmbed's recipe for absolute
positions): every other weight, the original rows and any reserved rows before them stay as they are.

The rows to keep come from the manifest of the ``ctxext interpolate`` output being trained (the original
length and offset it records). Gradients of the kept rows are zeroed, every other parameter is frozen, and
weight decay is off (AdamW would shrink rows whose gradient is zero), so those rows stay byte for byte.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ctxext.architectures import POSITION_TABLE
from ctxext.errors import CorruptCheckpoint, InvalidArgument, SourceNotFound
from ctxext.io import ModelFolder
from ctxext.manifest import read_manifest
from ctxext.train.runner import TrainSettings


def stretched_rows(folder: ModelFolder) -> tuple[int, int]:
    """(first new row, total rows) of the position table, from the manifest of the interpolation that made it."""
    try:
        operations = read_manifest(folder.root).get("operations") or []
    except (SourceNotFound, CorruptCheckpoint):
        operations = []
    stretch = next((op for op in operations if op.get("name") == "interpolate_positions"), None)
    if stretch is None:
        raise InvalidArgument(
            f"--positions-only trains the rows `ctxext interpolate` added; {folder.root} is not an interpolate "
            "output (its manifest records no interpolate_positions operation)"
        )
    parameters = stretch["parameters"]
    first_new = int(parameters["offset"]) + int(parameters["original_length"])
    return first_new, int(parameters["offset"]) + int(parameters["target_length"])


def train_new_positions_only(backbone: Any, folder: ModelFolder, settings: TrainSettings) -> tuple[TrainSettings, str]:
    """Freeze ``backbone`` except the added position rows; returns the settings to train with (no weight
    decay) and a note for the record."""
    first_new, rows = stretched_rows(folder)
    table = dict(backbone.named_parameters()).get(POSITION_TABLE)
    if table is None or table.shape[0] != rows:
        raise InvalidArgument(f"--positions-only: the model has no {rows}-row {POSITION_TABLE}")
    for parameter in backbone.parameters():
        parameter.requires_grad_(False)
    table.requires_grad_(True)
    table.register_hook(lambda gradient: _zero_rows_below(gradient, first_new))
    note = f"trained position rows {first_new}..{rows - 1} only; rows 0..{first_new - 1} and every other weight frozen"
    return dataclasses.replace(settings, weight_decay=0.0), note


def _zero_rows_below(gradient: Any, first_new: int) -> Any:
    gradient = gradient.clone()
    gradient[:first_new] = 0
    return gradient
