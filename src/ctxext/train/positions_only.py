"""Train only the rows a stretch added to a learned position table (LongEmbed's recipe for absolute
positions): every other weight, the original rows and any reserved rows before them stay as they are.

The rows to keep come from the manifest of the ``ctxext interpolate`` output being trained (its method,
grid, original length and offset): the reserved rows and the rows that hold an original row where the
stretch put it. Gradients of the kept rows are zeroed, every other parameter is frozen, and
weight decay is off (AdamW would shrink rows whose gradient is zero), so those rows stay byte for byte.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from ctxext.architectures import POSITION_TABLE
from ctxext.errors import InvalidArgument
from ctxext.io import ModelFolder
from ctxext.manifest import recorded_operations
from ctxext.positions import Grid, Method, anchor_rows
from ctxext.train.runner import TrainSettings


def kept_rows(folder: ModelFolder) -> tuple[np.ndarray, int]:
    """(rows that stay as they are, total rows) of the position table, from the manifest of the interpolation
    that made it: the reserved rows before the offset, and every row that holds an original row unchanged,
    where the stretch put it (``--tile``: rows 0..n-1; ``--grid scaled``: every (N/n)-th row; ``pinned``: the
    two ends only)."""
    stretch = next((op for op in recorded_operations(folder.root) if op.get("name") == "interpolate_positions"), None)
    if stretch is None:
        raise InvalidArgument(
            f"--positions-only trains the rows `ctxext interpolate` added; {folder.root} is not an interpolate "
            "output (its manifest records no interpolate_positions operation)"
        )
    parameters = stretch["parameters"]
    offset, original, target = (int(parameters[k]) for k in ("offset", "original_length", "target_length"))
    if parameters["method"] == Method.tile.value:
        anchors = np.arange(original)
    else:
        anchors, _ = anchor_rows(original, target, Grid(parameters.get("grid", Grid.pinned.value)))
    return np.concatenate([np.arange(offset), offset + anchors]), offset + target


def train_new_positions_only(backbone: Any, folder: ModelFolder, settings: TrainSettings) -> tuple[TrainSettings, str]:
    """Freeze ``backbone`` except the added position rows; returns the settings to train with (no weight
    decay) and a note for the record."""
    kept, rows = kept_rows(folder)
    table = dict(backbone.named_parameters()).get(POSITION_TABLE)
    if table is None or table.shape[0] != rows:
        raise InvalidArgument(f"--positions-only: the model has no {rows}-row {POSITION_TABLE}")
    for parameter in backbone.parameters():
        parameter.requires_grad_(False)
    table.requires_grad_(True)
    frozen = torch.as_tensor(kept, dtype=torch.long)
    table.register_hook(lambda gradient: gradient.index_fill(0, frozen, 0.0))
    note = (
        f"trained {rows - len(kept)} of {rows} position rows; the {len(kept)} reserved and original rows "
        "and every other weight frozen"
    )
    return dataclasses.replace(settings, weight_decay=0.0), note
