"""Bottleneck adapters (SPECTER2's kind) read from and written in the adapters library's format, and run by ctxext
itself on BERT-family models and BigBird, with the current transformers.

The adapters library (1.3.0, the latest release) pins transformers 4.57, which carries known remote-code CVEs, so
ctxext does not depend on it. What it needs of it is small and written down here: an adapter folder holds
``adapter_config.json`` (``{"name", "config": {...}, "hidden_size", "model_type", ...}``) and its weights
(``adapter.safetensors``, or the library's default ``pytorch_adapter.bin``, read with ``weights_only=True``).
A bottleneck sits in a layer's output block (``BertOutput`` after the feed-forward; ``BertSelfOutput`` after
self-attention for ``mh_adapter``), where the library computes, with ``h`` the block's projection (after dropout),
``x`` the block's input and ``LN`` the block's own LayerNorm::

    residual = h                      (residual_before_ln: true; false: after the step below)
    h = LN(h + x)                     (original_ln_before)
    a = up(act(down(h))) * scaling    (ln_before: a LayerNorm before down; dropout on a)
    a = a + residual                  (ln_after: a LayerNorm around this, adapter_residual_before_ln says where)
    out = LN(a + x)                   (original_ln_after; else a + x)

``seq_bn`` ("pfeiffer", SPECTER2's four adapters) is the output block only, ReLU, both original LayerNorms;
``double_seq_bn`` ("houlsby") both blocks, swish, no LayerNorm before. ``tests/test_bottleneck.py`` checks this
against outputs the library itself produced (``tests/data/adapter_references``, made by the CI interop job).

Weights keep the library's names, so a folder moves between the two: natively on BERT,
``encoder.layer.N.output.adapters.NAME.adapter_down.0.weight``; under the library's plugin interface (how it runs
BigBird), ``encoder.layer.N.output_adapters.adapters.NAME...``. :data:`ADAPTER_KEY_RULES` reads both.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctxext.architectures import ENCODER_FAMILIES
from ctxext.errors import CheckFailed, CorruptCheckpoint, SourceNotFound, UnsupportedArchitecture
from ctxext.io import SafetensorsFile, bytes_to_array, load_pickled_state_dict, read_json

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS_BIN = "pytorch_adapter.bin"
ADAPTER_WEIGHTS_SAFETENSORS = "adapter.safetensors"
ADAPTERS_DIR = "adapters"
INTERFACE_FILE = "adapter_interface.json"
LIBRARY_VERSION = "1.3.0"
"""The adapters release whose format ctxext reads and writes (checked by the CI interop job)."""

# The library's plugin interface for BigBird (adapter_interface.json), as data: with it the library loads the
# adapters of a folder ``ctxext transfer`` wrote (``adapters.load_model(folder, BigBirdModel)``).
BIGBIRD_INTERFACE: dict[str, Any] = {
    "adapter_methods": ["bottleneck"],
    "model_embeddings": "embeddings",
    "model_layers": "encoder.layer",
    "layer_self_attn": "attention",
    "layer_cross_attn": None,
    "attn_q_proj": "self.query",
    "attn_k_proj": "self.key",
    "attn_v_proj": "self.value",
    "attn_o_proj": "output.dense",
    "layer_intermediate_proj": "intermediate.dense",
    "layer_output_proj": "output.dense",
    "layer_pre_self_attn": "attention",
    "layer_pre_ffn": "intermediate",
    "layer_ln_1": "attention.output.LayerNorm",
    "layer_ln_2": "output.LayerNorm",
}

# Base-model prefixes that adapter weights saved from a BERT or RoBERTa model with a head carry.
SOURCE_PREFIXES = tuple(f"{ENCODER_FAMILIES[model_type].prefix}." for model_type in ("bert", "roberta"))

# ----------------------------------------------------------------------------- the config

# Every field of a bottleneck config as the library (1.3.0) writes it, with the values of seq_bn; ``None``:
# any value is read (``reduction_factor``, ``non_linearity`` and the like are what the adapter is).
SEQ_BN: dict[str, Any] = {
    "mh_adapter": False,
    "output_adapter": True,
    "reduction_factor": 16,
    "non_linearity": "relu",
    "original_ln_before": True,
    "original_ln_after": True,
    "ln_before": False,
    "ln_after": False,
    "init_weights": "bert",
    "init_weights_seed": None,
    "is_parallel": False,
    "scaling": 1.0,
    "use_gating": False,
    "residual_before_ln": True,
    "adapter_residual_before_ln": False,
    "inv_adapter": None,
    "inv_adapter_reduction_factor": None,
    "cross_adapter": False,
    "leave_out": [],
    "dropout": 0.0,
    "phm_layer": False,
    "phm_dim": 4,
    "factorized_phm_W": True,
    "shared_W_phm": False,
    "shared_phm_rule": True,
    "factorized_phm_rule": False,
    "phm_c_init": "normal",
    "phm_init_range": 0.0001,
    "learn_phm": True,
    "hypercomplex_nonlinearity": "glorot-uniform",
    "phm_rank": 1,
    "phm_bias": True,
    "stochastic_depth": 0.0,
}
DOUBLE_SEQ_BN = {**SEQ_BN, "mh_adapter": True, "non_linearity": "swish", "original_ln_before": False}
NAMED_CONFIGS = {"seq_bn": SEQ_BN, "pfeiffer": SEQ_BN, "double_seq_bn": DOUBLE_SEQ_BN, "houlsby": DOUBLE_SEQ_BN}

# Fields whose value must be the one given: anything else is a kind of adapter ctxext does not run (it refuses it
# rather than running it wrong). The phm_* fields only matter with phm_layer, the inv_* ones with inv_adapter.
REQUIRED_VALUES: dict[str, Any] = {
    "architecture": ("bottleneck", None),
    "is_parallel": (False,),
    "use_gating": (False,),
    "inv_adapter": (None,),
    "cross_adapter": (False,),
    "phm_layer": (False,),
    "stochastic_depth": (0, 0.0),
}
FREE_FIELDS = {
    "mh_adapter",
    "output_adapter",
    "reduction_factor",
    "non_linearity",
    "original_ln_before",
    "original_ln_after",
    "ln_before",
    "ln_after",
    "init_weights",
    "init_weights_seed",
    "scaling",
    "residual_before_ln",
    "adapter_residual_before_ln",
    "inv_adapter_reduction_factor",
    "leave_out",
    "dropout",
    *(key for key in SEQ_BN if key.startswith(("phm_", "factorized_phm", "shared_", "learn_phm", "hypercomplex"))),
}


@dataclass(frozen=True)
class BottleneckConfig:
    """A bottleneck adapter's config, every field checked (see :func:`parse_config`)."""

    fields: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def locations(self) -> list[str]:
        """Where it sits in each layer: ``attention`` (after self-attention), ``output`` (after the FFN)."""
        return [where for where, flag in (("attention", "mh_adapter"), ("output", "output_adapter")) if self[flag]]

    def bottleneck_size(self, layer: int, hidden_size: int) -> int:
        factor = self["reduction_factor"]
        if isinstance(factor, dict):
            factor = factor.get(str(layer), factor.get("default"))
        return max(1, int(hidden_size // float(factor)))


def parse_config(config: Any, where: str) -> BottleneckConfig:
    """An adapter's ``config`` (a dict, or a name such as ``seq_bn``), every field known and supported."""
    if isinstance(config, str):
        if config not in NAMED_CONFIGS:
            raise UnsupportedArchitecture(
                f"{where}: adapter config {config!r} is not one ctxext runs ({', '.join(NAMED_CONFIGS)})"
            )
        config = NAMED_CONFIGS[config]
    if not isinstance(config, dict):
        raise CorruptCheckpoint(f"{where}: 'config' must be an object or a config name")
    unknown = sorted(set(config) - FREE_FIELDS - set(REQUIRED_VALUES))
    if unknown:
        raise UnsupportedArchitecture(f"{where}: adapter config field {unknown[0]!r} is not one ctxext knows")
    for key, allowed in REQUIRED_VALUES.items():
        if config.get(key, allowed[0]) not in allowed:
            raise UnsupportedArchitecture(
                f"{where}: {key}={config[key]!r}: ctxext runs sequential bottleneck adapters only "
                f"({key} must be {allowed[0]!r})"
            )
    fields = {**SEQ_BN, **config}
    if not isinstance(fields["scaling"], (int, float)) or isinstance(fields["scaling"], bool):
        raise UnsupportedArchitecture(f"{where}: scaling={fields['scaling']!r}: ctxext runs a fixed number only")
    if fields["residual_before_ln"] not in (True, False, "post_add"):
        raise CorruptCheckpoint(f"{where}: residual_before_ln must be true, false or 'post_add'")
    factor = fields["reduction_factor"]
    if not (isinstance(factor, (int, float)) and factor > 0) and not isinstance(factor, dict):
        raise CorruptCheckpoint(f"{where}: reduction_factor must be a positive number or a per-layer mapping")
    return BottleneckConfig(fields)


# ----------------------------------------------------------------------------- reading adapter folders


@dataclass
class AdapterFolder:
    """An adapter in the adapters library's format: adapter_config.json plus weights."""

    path: Path
    config: dict[str, Any]

    @classmethod
    def open(cls, path: Path) -> AdapterFolder:
        if not (path / ADAPTER_CONFIG).is_file():
            raise SourceNotFound(f"{path} has no {ADAPTER_CONFIG}: not an adapter in the adapters library's format")
        if not any((path / name).is_file() for name in (ADAPTER_WEIGHTS_SAFETENSORS, ADAPTER_WEIGHTS_BIN)):
            raise SourceNotFound(
                f"{path} has no adapter weights ({ADAPTER_WEIGHTS_SAFETENSORS} or {ADAPTER_WEIGHTS_BIN})"
            )
        config = read_json(path / ADAPTER_CONFIG)
        if not isinstance(config, dict) or "name" not in config or "config" not in config:
            raise CorruptCheckpoint(f"{path / ADAPTER_CONFIG} lacks 'name' or 'config': not an adapters config")
        return cls(path=path, config=config)

    @property
    def stored_name(self) -> str:
        """The name the adapter was saved under; its weight keys carry it."""
        return str(self.config["name"])

    @property
    def weights_file(self) -> Path:
        safe = self.path / ADAPTER_WEIGHTS_SAFETENSORS
        return safe if safe.is_file() else self.path / ADAPTER_WEIGHTS_BIN

    def bottleneck(self) -> BottleneckConfig:
        return parse_config(self.config["config"], str(self.path / ADAPTER_CONFIG))

    def methods(self) -> list[str]:
        self.bottleneck()  # refuses any other kind
        return ["bottleneck"]

    def state_dict(self) -> dict[str, Any]:
        """All weights as numpy arrays (safetensors) or torch tensors (.bin, read with weights_only=True)."""
        path = self.weights_file
        if path.suffix == ".safetensors":
            shard = SafetensorsFile(path)
            return {
                info.name: bytes_to_array(shard.read_bytes(info.name), info.dtype, info.shape) for info in shard.infos()
            }
        return load_pickled_state_dict(path)


def check_supported(adapter: AdapterFolder, hidden_size: int) -> None:
    adapter.bottleneck()
    adapter_hidden = adapter.config.get("hidden_size")
    if adapter_hidden is not None and int(adapter_hidden) != hidden_size:
        raise UnsupportedArchitecture(
            f"adapter {adapter.stored_name!r} was trained for hidden size {adapter_hidden}, the model has {hidden_size}"
        )


@dataclass(frozen=True)
class AdapterKeyRule:
    """One adapter tensor role: its name in the native BERT layout and in the BigBird plugin layout.

    ``source`` is a regex with ``{name}`` standing for the adapter's stored name; ``target`` the replacement with
    ``{name}`` for the adapter's new name; ``location`` where the bottleneck sits.
    """

    role: str
    source: str
    target: str
    location: str


NAME = "{name}"
ADAPTER_KEY_RULES: tuple[AdapterKeyRule, ...] = (
    AdapterKeyRule(
        "bottleneck after the feed-forward block",
        r"encoder\.layer\.(\d+)\.output\.adapters\.{name}\.(.+)",
        r"encoder.layer.\1.output_adapters.adapters.{name}.\2",
        "output",
    ),
    AdapterKeyRule(
        "bottleneck after self-attention",
        r"encoder\.layer\.(\d+)\.attention\.output\.adapters\.{name}\.(.+)",
        r"encoder.layer.\1.attention_adapters.adapters.{name}.\2",
        "attention",
    ),
    # Adapters already in the plugin layout (saved from a BigBird written by ctxext) keep their names.
    AdapterKeyRule(
        "bottleneck after the feed-forward block (plugin layout)",
        r"encoder\.layer\.(\d+)\.output_adapters\.adapters\.{name}\.(.+)",
        r"encoder.layer.\1.output_adapters.adapters.{name}.\2",
        "output",
    ),
    AdapterKeyRule(
        "bottleneck after self-attention (plugin layout)",
        r"encoder\.layer\.(\d+)\.attention_adapters\.adapters\.{name}\.(.+)",
        r"encoder.layer.\1.attention_adapters.adapters.{name}.\2",
        "attention",
    ),
)


def _matched(key: str, stored_name: str) -> tuple[AdapterKeyRule, re.Match[str]]:
    bare = next((key[len(prefix) :] for prefix in SOURCE_PREFIXES if key.startswith(prefix)), key)
    escaped = re.escape(stored_name)
    for rule in ADAPTER_KEY_RULES:
        match = re.fullmatch(rule.source.replace(NAME, escaped), bare)
        if match:
            return rule, match
    raise UnsupportedArchitecture(f"adapter {stored_name!r}: weight {key!r} is not one of a bottleneck adapter")


def rename_adapter_key(key: str, stored_name: str, new_name: str) -> tuple[str, str]:
    """(key in the BigBird plugin layout, role) for one adapter weight; an unmapped key is an error."""
    rule, match = _matched(key, stored_name)
    return match.expand(rule.target.replace(NAME, new_name.replace("\\", "\\\\"))), rule.role


def renamed_adapter_config(adapter: AdapterFolder, new_name: str, hidden_size: int) -> dict[str, Any]:
    """The adapter's config as the library would write it from the BigBird model."""
    config = {key: value for key, value in adapter.config.items() if key not in {"model_class", "model_type"}}
    return {
        **config,
        "name": new_name,
        "model_type": "big_bird",
        "model_class": "BigBirdModel",
        "hidden_size": hidden_size,
        "version": f"adapters.{LIBRARY_VERSION}",
    }


def interface_file_content() -> dict[str, Any]:
    """What the library writes as adapter_interface.json, so that ``adapters.load_model`` finds it."""
    return {
        "interface": {**BIGBIRD_INTERFACE, "attn_qkv_proj": None, "layer_pre_cross_attn": None, "base_model": None},
        "model_type": "big_bird",
        "version": f"adapters.{LIBRARY_VERSION}",
    }


# ----------------------------------------------------------------------------- running them


def backbone_of(model: Any) -> Any:
    """The encoder model (BertModel, BigBirdModel, ...) of ``model``, a head model or the encoder itself."""
    return getattr(model, "base_model", model)


def _blocks(model: Any, location: str) -> list[Any]:
    """Each layer's output block at ``location`` (the module holding dense, dropout and LayerNorm)."""
    layers = backbone_of(model).encoder.layer
    return [layer.attention.output if location == "attention" else layer.output for layer in layers]


def make_bottleneck(hidden_size: int, size: int, config: BottleneckConfig) -> Any:
    """One adapter module, its parameters named as the library names them (``adapter_down.0``, ``adapter_up``)."""
    from torch import nn
    from transformers.activations import get_activation

    module = nn.Module()
    down: list[Any] = []
    if config["ln_before"]:  # registered under both names, as the library does (its files hold both)
        module.adapter_norm_before = nn.LayerNorm(hidden_size)
        down.append(module.adapter_norm_before)
    activation = nn.Identity() if config["non_linearity"] is None else get_activation(config["non_linearity"].lower())
    module.adapter_down = nn.Sequential(*down, nn.Linear(hidden_size, size), activation)
    module.adapter_up = nn.Linear(size, hidden_size)
    if config["ln_after"]:
        module.adapter_norm_after = nn.LayerNorm(hidden_size)
    module.dropout = nn.Dropout(p=float(config["dropout"]))
    module.config = config
    return module


def _adapted_forward(self: Any, hidden_states: Any, input_tensor: Any) -> Any:
    """An output block's forward with its active bottleneck, as the adapters library computes it."""
    hidden = self.dropout(self.dense(hidden_states))
    if self.active_adapter is None:
        return self.LayerNorm(hidden + input_tensor)
    adapter = self.adapters[self.active_adapter]
    config = adapter.config
    residual = hidden if config["residual_before_ln"] is True else None
    if config["original_ln_before"]:
        hidden = hidden + input_tensor
        residual = hidden if config["residual_before_ln"] == "post_add" else residual
        hidden = self.LayerNorm(hidden)
    residual = hidden if residual is None else residual
    output = adapter.dropout(adapter.adapter_up(adapter.adapter_down(hidden)) * config["scaling"])
    if config["adapter_residual_before_ln"]:
        output = output + residual
    if config["ln_after"]:
        output = adapter.adapter_norm_after(output)
    if not config["adapter_residual_before_ln"]:
        output = output + residual
    return self.LayerNorm(output + input_tensor) if config["original_ln_after"] else output + input_tensor


def _adaptable(block: Any) -> None:
    """Give an output block a dict of adapters and the forward that runs the active one (idempotent)."""
    from torch import nn

    if not hasattr(block, "adapters"):
        block.adapters = nn.ModuleDict()
        block.active_adapter = None
        block.forward = types.MethodType(_adapted_forward, block)


def add_adapter(model: Any, name: str, config: BottleneckConfig) -> list[str]:
    """Add a new bottleneck ``name`` (initialised as the library's ``init_weights: bert``); its parameter names."""
    import torch

    hidden_size = backbone_of(model).config.hidden_size
    leave_out = set(config["leave_out"])
    for location in config.locations():
        for index, block in enumerate(_blocks(model, location)):
            if index in leave_out:
                continue
            _adaptable(block)
            if name in block.adapters:
                raise CheckFailed(f"the model has an adapter {name!r} already")
            adapter = make_bottleneck(hidden_size, config.bottleneck_size(index, hidden_size), config)
            with torch.no_grad():
                for module in adapter.modules():
                    if isinstance(module, torch.nn.Linear):
                        module.weight.normal_(0.0, 0.02)
                        module.bias.zero_()
            block.adapters[name] = adapter.to(dtype=block.dense.weight.dtype, device=block.dense.weight.device)
    return adapter_parameter_names(model, name)


def adapter_parameter_names(model: Any, name: str) -> list[str]:
    return list(_adapter_tensors(model, name))


def _adapter_tensors(model: Any, name: str) -> dict[str, Any]:
    """The adapter's tensors by every name the library saves them under (a LayerNorm before the bottleneck has
    two)."""
    state = backbone_of(model).state_dict(keep_vars=True)
    return {key: tensor for key, tensor in state.items() if f".adapters.{name}." in key}


def load_adapter_strictly(model: Any, folder: str | Path, load_as: str) -> str:
    """Load the adapter in ``folder`` as ``load_as``; any weight missing, left over or of another shape is an
    error naming it (the library only logs those)."""
    import torch

    adapter = AdapterFolder.open(Path(folder))
    config = adapter.bottleneck()
    check_supported(adapter, backbone_of(model).config.hidden_size)
    add_adapter(model, load_as, config)
    expected = _adapter_tensors(model, load_as)
    found: dict[str, Any] = {}
    for key, tensor in adapter.state_dict().items():
        rule, match = _matched(key, adapter.stored_name)
        layer, rest = match.group(1), match.group(2)
        block = "attention.output" if rule.location == "attention" else "output"
        found[f"encoder.layer.{layer}.{block}.adapters.{load_as}.{rest}"] = torch.as_tensor(np.array(tensor))
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        remove_adapter(model, load_as)
        details = "; ".join(
            f"{what}: {', '.join(keys[:3])}"
            for what, keys in (("missing", missing), ("unexpected", unexpected))
            if keys
        )
        raise CheckFailed(f"adapter {folder} does not fit the model ({details})")
    with torch.no_grad():
        for key, parameter in expected.items():
            if tuple(found[key].shape) != tuple(parameter.shape):
                remove_adapter(model, load_as)
                raise CheckFailed(
                    f"adapter {folder}: {key} has shape {tuple(found[key].shape)}, the model {tuple(parameter.shape)}"
                )
            parameter.copy_(found[key].to(parameter.dtype))
    return load_as


def _adapted_blocks(model: Any) -> list[Any]:
    """The output blocks that hold adapters."""
    return [block for where in ("attention", "output") for block in _blocks(model, where) if hasattr(block, "adapters")]


def remove_adapter(model: Any, name: str) -> None:
    for block in _adapted_blocks(model):
        if name in block.adapters:
            del block.adapters[name]
            if block.active_adapter == name:
                block.active_adapter = None


def activate_adapter(model: Any, name: str | None) -> None:
    """Run ``name`` in every block that holds it (None: none, the plain model)."""
    for block in _adapted_blocks(model):
        block.active_adapter = name if name in block.adapters else None


def adapter_state(model: Any, name: str, *, plugin_layout: bool) -> dict[str, Any]:
    """The adapter's weights under the names the library saves them: its native BERT layout, or the plugin
    interface's (BigBird)."""
    state = {}
    for key, parameter in _adapter_tensors(model, name).items():
        if plugin_layout:
            key = key.replace(".attention.output.adapters.", ".attention_adapters.adapters.").replace(
                ".output.adapters.", ".output_adapters.adapters."
            )
        state[key] = parameter.detach().cpu().clone()  # one tensor per name: safetensors refuses shared memory
    return state


def adapter_config_file(model: Any, name: str, config: BottleneckConfig) -> dict[str, Any]:
    """adapter_config.json as the library writes it for ``model``."""
    backbone = backbone_of(model)
    model_type = backbone.config.model_type
    return {
        "config": dict(config.fields),
        "hidden_size": backbone.config.hidden_size,
        "model_class": type(backbone).__name__,
        "model_name": getattr(backbone.config, "name_or_path", None) or None,
        "model_type": model_type,
        "name": name,
        "version": f"adapters.{LIBRARY_VERSION}",
    }


def save_adapter(model: Any, name: str, folder: Path) -> None:
    """Write the adapter ``name`` as the library would save it (safetensors weights)."""
    from safetensors.torch import save_file

    from ctxext.io import write_json

    config = next(block.adapters[name].config for block in _adapted_blocks(model) if name in block.adapters)
    folder.mkdir(parents=True, exist_ok=True)
    plugin = backbone_of(model).config.model_type == "big_bird"
    save_file(
        adapter_state(model, name, plugin_layout=plugin),
        str(folder / ADAPTER_WEIGHTS_SAFETENSORS),
        metadata={"format": "pt"},
    )
    write_json(folder / ADAPTER_CONFIG, adapter_config_file(model, name, config), sort_keys=True)


# ----------------------------------------------------------------------------- the one call to load


def adapter_folders(model_dir: Path, adapters: Sequence[str | Path]) -> list[Path]:
    """Each adapter named: a folder, or a name under the model's ``adapters/`` (what transfer and finetune write)."""
    folders = []
    for adapter in adapters:
        candidates = [Path(adapter), *(root / ADAPTERS_DIR / str(adapter) for root in (model_dir, model_dir.parent))]
        found = next((folder for folder in candidates if (folder / ADAPTER_CONFIG).is_file()), None)
        if found is None:
            raise SourceNotFound(f"adapter {adapter!r}: no {ADAPTER_CONFIG} at {', '.join(map(str, candidates))}")
        folders.append(found)
    return folders


def with_adapters(model: Any, model_dir: Path, adapters: Iterable[str | Path], active: str | None = None) -> Any:
    """``model`` (any transformers encoder model) with ``adapters`` loaded strictly and ``active`` (default: the
    first) running."""
    names = [load_adapter_strictly(model, folder, folder.name) for folder in adapter_folders(model_dir, list(adapters))]
    if names:
        activate_adapter(model, active or names[0])
    return model


def load_model_with_adapters(
    model_dir: str | Path, adapters: Sequence[str | Path] = (), *, active: str | None = None
) -> Any:
    """Load a model folder with plain transformers (every tensor checked), load ``adapters`` and activate one:
    the one documented call. ``adapters``: names under the folder's ``adapters/`` or adapter folders; each loads
    under its folder's name; ``active`` (default: the first) runs. No remote code, no adapters library."""
    from ctxext.checks import load_model_strictly

    model = load_model_strictly(Path(model_dir)).base_model
    return with_adapters(model, Path(model_dir), adapters, active).eval()


def load_sentence_transformer(folder: str | Path, adapter: str | None = None) -> Any:
    """A sentence-transformers folder ctxext wrote, as a plain ``SentenceTransformer`` (no remote code) with
    ``adapter`` (a name under ``adapters/`` or an adapter folder) running; a BigBird gets ctxext's block-sparse
    attention, as ``ctxext embed`` runs it."""
    from sentence_transformers import SentenceTransformer

    from ctxext.block_sparse import use_block_sparse

    model = SentenceTransformer(str(folder), trust_remote_code=False, device="cpu")
    backbone = model[0].auto_model
    if adapter is not None:
        with_adapters(backbone, Path(folder), [adapter])
    if backbone.config.model_type == "big_bird":
        use_block_sparse(model)
    return model.eval()
