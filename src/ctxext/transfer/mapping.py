"""Source tensors and adapters -> BigBird's: every tensor by its role's rule (copied, stretched or dropped), a
pooler where the source has none, adapters renamed into the plugin layout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ctxext.architectures import BUFFERS, EncoderFamily
from ctxext.bottleneck import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS_SAFETENSORS,
    check_supported,
    rename_adapter_key,
    renamed_adapter_config,
)
from ctxext.checks import max_abs_diff
from ctxext.errors import UnsupportedArchitecture
from ctxext.io import CheckpointReader, OutTensor, array_to_bytes, bytes_to_array
from ctxext.manifest import Check, OperationRecord
from ctxext.positions import Grid, Method, extend_table
from ctxext.transfer.sources import SourceAdapter
from ctxext.transfer.tables import (
    BIGBIRD,
    CONFIG_CARRIED,
    CONFIG_REQUIRED,
    DROP,
    GENERIC_CONFIG_FIELDS,
    POOLER,
    POSITIONS,
    PRETRAINING_HEADS,
    RULES,
    SOURCE_CONFIG_DEFAULTS,
    TensorRule,
)


def base_prefix(names: list[str], family: EncoderFamily) -> str:
    """The base-model prefix the checkpoint's encoder tensors carry ('' for a bare base model)."""
    prefix = family.prefix + "."
    encoder = [n for n in names if f".{family.block_root}" in f".{n}"]
    if encoder and all(n.startswith(prefix) for n in encoder):
        return prefix
    return ""


def map_tensor_name(name: str, prefix: str, family: EncoderFamily) -> tuple[TensorRule, str | None]:
    """The rule and the target name of one source tensor; an unmapped tensor raises."""
    bare = name[len(prefix) :] if prefix and name.startswith(prefix) else name
    if bare in BUFFERS:
        return RULES["buffers"], None
    if bare.startswith(PRETRAINING_HEADS):
        return RULES["pretraining_heads"], None
    found = family.role_of(bare)
    rule = RULES.get(found[0].rsplit(".", 1)[0]) if found else None
    if found is None or rule is None:
        raise UnsupportedArchitecture(f"source tensor {name!r} has no BigBird mapping; nothing was written")
    return rule, BIGBIRD.tensor_name(*found)


def bigbird_config(
    source_config: dict[str, Any], target_length: int, block_size: int, num_random_blocks: int, sep_token_id: int | None
) -> tuple[dict[str, Any], list[str]]:
    """The BigBird config (every model field explicit, none left to BigBird's defaults, which differ from
    BERT's) and the source fields that have no meaning in BigBird."""
    model_type = source_config["model_type"]
    complete = {**SOURCE_CONFIG_DEFAULTS[model_type], **source_config}
    for key, required in CONFIG_REQUIRED.items():
        if complete.get(key, required) != required:
            raise UnsupportedArchitecture(f"the source has {key}={complete[key]!r}; BigBird supports only {required!r}")
    carried = {key: complete[key] for key in CONFIG_CARRIED if key in complete}
    if carried.get("sep_token_id") is None:
        carried["sep_token_id"] = sep_token_id
    config = {
        "model_type": BIGBIRD.model_type,
        **carried,
        "max_position_embeddings": target_length,
        "attention_type": "block_sparse",
        "block_size": block_size,
        "num_random_blocks": num_random_blocks,
        "ctxext_block_sparse_seed": 0,  # the random-block pattern ctxext's attention draws (block_sparse.py)
        "use_bias": True,
        "rescale_embeddings": False,
        "architectures": ["BigBirdModel"],
    }
    left_out = sorted(key for key in source_config if key not in config and key not in GENERIC_CONFIG_FIELDS)
    if model_type != "bert":
        left_out.append(f"model_type={model_type}")
    return config, left_out


@dataclass
class AdapterOutput:
    """An adapter as it will be written: its folder name, config and renamed tensors."""

    name: str
    source: SourceAdapter
    config: dict[str, Any]
    tensors: dict[str, Any]
    record: OperationRecord


def map_tensors(
    reader: CheckpointReader,
    family: EncoderFamily,
    layout: Any,
    target_length: int,
    method: Method,
    grid: Grid,
    new_config: dict[str, Any],
    record: OperationRecord,
) -> list[OutTensor]:
    prefix = base_prefix(reader.names, family)
    mapped = [(name, *map_tensor_name(name, prefix, family)) for name in reader.names]  # raises before any write
    tensors: list[OutTensor] = []
    for name, rule, target_name in mapped:
        if rule.action == DROP or target_name is None:
            record.dropped.append(name)
            continue
        if rule.action == POSITIONS:
            tensors.append(_position_table(reader, name, target_name, layout, target_length, method, grid, record))
            continue
        tensors.append(OutTensor.copied(reader, name, target_name))
        if target_name == name:
            record.copied.append(name)
        else:
            record.renamed[name] = target_name
    written = {t.info.name for t in tensors}
    if not set(POOLER) & written:
        tensors.extend(_new_pooler(new_config, reader, family, record))
    record.notes.append(
        f"dropped: {', '.join(sorted({map_tensor_name(n, prefix, family)[0].why for n in record.dropped}))}"
        if record.dropped
        else "no source tensor dropped"
    )
    return tensors


def _position_table(
    reader: CheckpointReader,
    name: str,
    target_name: str,
    layout: Any,
    target_length: int,
    method: Method,
    grid: Grid,
    record: OperationRecord,
) -> OutTensor:
    """BigBird has no offset rows: the table keeps the rows after the source's offset, stretched (copied when
    the source has ``target_length`` positions already)."""
    original = reader.array(name)
    dtype = reader.infos[name].dtype
    positions = original[layout.offset :]
    copied = target_length == layout.length
    stretched = positions if copied else extend_table(positions, 0, target_length, method, grid)
    table = bytes_to_array(array_to_bytes(stretched, dtype), dtype, stretched.shape)
    finite = bool(np.isfinite(table).all())
    record.require(Check(f"{target_name}: all rows finite", float(finite), 1.0, passed=finite))
    if method == Method.tile or copied:
        difference = max_abs_diff(table[: layout.length], positions)
        record.require(
            Check(
                f"{target_name}: the first {layout.length} rows equal the source's",
                difference,
                0.0,
                passed=difference == 0.0,
            )
        )
    record.modified.append(target_name)
    if name != target_name:
        record.renamed[name] = target_name
    record.parameters["position_table"] = {
        "source": name,
        "target": target_name,
        "rows": [layout.rows, target_length],
        "stretch": "none: copied" if copied else method.value,
    }
    return OutTensor.from_array(target_name, table, dtype)


def _new_pooler(
    config: dict[str, Any], reader: CheckpointReader, family: EncoderFamily, record: OperationRecord
) -> list[OutTensor]:
    """BigBirdModel always has a pooler; a source without one gets a seeded random one (recorded)."""
    hidden = config["hidden_size"]
    token_table = family.tensor_name("token_embd.weight")
    dtype = reader.infos[next(n for n in reader.names if n.endswith(token_table))].dtype
    generator = np.random.default_rng(0)
    weight = generator.normal(0.0, config["initializer_range"], (hidden, hidden)).astype(np.float32)
    weight_name, bias_name = POOLER
    record.created.extend(POOLER)
    record.notes.append(
        "the source has no pooler; BigBird's pooler was created (normal init, seed 0): "
        "pooler_output is untrained, last_hidden_state is unaffected"
    )
    return [
        OutTensor.from_array(weight_name, weight, dtype),
        OutTensor.from_array(bias_name, np.zeros(hidden, np.float32), dtype),
    ]


def map_adapter(item: SourceAdapter, hidden_size: int) -> AdapterOutput:
    adapter = item.folder
    check_supported(adapter, hidden_size)
    record = OperationRecord(
        f"adapter:{item.name}",
        parameters={
            "source_name": adapter.stored_name,
            "name": item.name,
            "methods": adapter.methods(),
            "source_file": adapter.weights_file.name,
        },
    )
    renamed: dict[str, Any] = {}
    for key, tensor in adapter.state_dict().items():
        new_key, _ = rename_adapter_key(key, adapter.stored_name, item.name)
        if new_key in renamed:
            raise UnsupportedArchitecture(f"adapter {adapter.stored_name!r}: two weights map to {new_key!r}")
        renamed[new_key] = tensor
        record.renamed[key] = new_key
    if not renamed:
        raise UnsupportedArchitecture(f"adapter {adapter.stored_name!r} ({adapter.path}) has no weights")
    config = renamed_adapter_config(adapter, item.name, hidden_size)
    record.files["written"] = [f"adapters/{item.name}/{f}" for f in (ADAPTER_CONFIG, ADAPTER_WEIGHTS_SAFETENSORS)]
    return AdapterOutput(item.name, item, config, renamed, record)


def adapter_tensors(item: AdapterOutput) -> list[OutTensor]:
    """The adapter's weights for adapter.safetensors (hashed in the manifest, checked by verify)."""
    return [
        OutTensor.from_tensor(
            name, np.ascontiguousarray(value) if isinstance(value, np.ndarray) else value.contiguous()
        )
        for name, value in item.tensors.items()
    ]
