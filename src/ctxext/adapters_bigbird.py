"""Adapters (the ``adapters`` library) on BigBird: the plugin interface, adapter key renaming, strict loading.

``adapters`` 1.3 has no BigBird model; its plugin interface (``AdapterModelInterface``) works because
BigBird's module tree equals BERT's. Every field below is needed (see shared notes, traps.md): in particular
``layer_pre_self_attn`` must be ``attention`` and not ``attention.self``, because BigBird replaces
``attention.self`` whenever its attention type changes and a hook on it would be lost.

A checkpoint written by ``ctxext transfer`` carries ``adapter_interface.json`` beside its config, which
``adapters.load_model(folder, BigBirdModel)`` reads by itself. One ctxext call is still needed after it,
:func:`bind_layer_norm_hooks`, because adapters 1.3.0 hands every layer's bottleneck the last layer's
LayerNorm under the plugin interface (see that function). :func:`load_model_with_adapters` does both.

Adapter weights saved from natively supported models (BERT, RoBERTa) and from the plugin interface name
the same tensors differently; :data:`ADAPTER_KEY_RULES` is the table between the two layouts. A key no
rule matches stops the transfer, and loading checks missing and unexpected keys, which ``adapters`` itself
only logs.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctxext.architectures import ENCODER_FAMILIES
from ctxext.compat import adapters_version, require_adapters
from ctxext.errors import CheckFailed, CorruptCheckpoint, SourceNotFound, UnsupportedArchitecture
from ctxext.io import SafetensorsFile, bytes_to_array, load_pickled_state_dict, read_json

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS_BIN = "pytorch_adapter.bin"
ADAPTER_WEIGHTS_SAFETENSORS = "adapter.safetensors"
INTERFACE_FILE = "adapter_interface.json"

# The plugin interface for BigBird, as data. Methods: those that work through the interface on BigBird.
BIGBIRD_INTERFACE: dict[str, Any] = {
    "adapter_methods": ["bottleneck", "lora", "reft", "invertible"],
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

NAME = "{name}"


@dataclass(frozen=True)
class AdapterKeyRule:
    """One adapter tensor role: its name in the native BERT layout and in the BigBird plugin layout.

    ``source`` is a regex with ``{name}`` standing for the adapter's stored name; ``target`` the
    replacement with ``{name}`` for the adapter's new name.
    """

    role: str
    source: str
    target: str


ADAPTER_KEY_RULES: tuple[AdapterKeyRule, ...] = (
    AdapterKeyRule(
        "bottleneck after the feed-forward block",
        r"encoder\.layer\.(\d+)\.output\.adapters\.{name}\.(.+)",
        r"encoder.layer.\1.output_adapters.adapters.{name}.\2",
    ),
    AdapterKeyRule(
        "bottleneck after self-attention",
        r"encoder\.layer\.(\d+)\.attention\.output\.adapters\.{name}\.(.+)",
        r"encoder.layer.\1.attention_adapters.adapters.{name}.\2",
    ),
    AdapterKeyRule(
        "lora / ia3 on a projection",
        r"encoder\.layer\.(\d+)\.(attention\.self\.(?:query|key|value)|attention\.output\.dense|"
        r"intermediate\.dense|output\.dense)\.loras\.{name}\.(.+)",
        r"encoder.layer.\1.\2.loras.{name}.\3",
    ),
    AdapterKeyRule(
        "invertible adapter on the embeddings", r"invertible_adapters\.{name}\.(.+)", r"invertible_adapters.{name}.\1"
    ),
    # Adapters already in the plugin layout (saved from a BigBird written by ctxext) keep their names.
    AdapterKeyRule(
        "bottleneck after the feed-forward block (plugin layout)",
        r"encoder\.layer\.(\d+)\.output_adapters\.adapters\.{name}\.(.+)",
        r"encoder.layer.\1.output_adapters.adapters.{name}.\2",
    ),
    AdapterKeyRule(
        "bottleneck after self-attention (plugin layout)",
        r"encoder\.layer\.(\d+)\.attention_adapters\.adapters\.{name}\.(.+)",
        r"encoder.layer.\1.attention_adapters.adapters.{name}.\2",
    ),
)

# adapter config "architecture" -> the interface method it needs; None (bottleneck) is the default.
METHOD_OF_ARCHITECTURE = {None: "bottleneck", "lora": "lora", "reft": "reft"}


def bigbird_interface():
    """The ``adapters.AdapterModelInterface`` for BigBird."""
    require_adapters("BigBird with adapters")
    from adapters import AdapterModelInterface

    return AdapterModelInterface(**BIGBIRD_INTERFACE)


def interface_file_content() -> dict[str, Any]:
    """What ``adapters`` writes as adapter_interface.json, so that ``adapters.load_model`` finds it."""
    require_adapters("writing adapters")
    return {
        "interface": {**BIGBIRD_INTERFACE, "attn_qkv_proj": None, "layer_pre_cross_attn": None, "base_model": None},
        "model_type": "big_bird",
        "version": "adapters." + adapters_version(),
    }


# ----------------------------------------------------------------------------- reading adapters


@dataclass
class AdapterFolder:
    """An adapter in the ``adapters`` format: adapter_config.json plus weights."""

    path: Path
    config: dict[str, Any]

    @classmethod
    def open(cls, path: Path) -> AdapterFolder:
        if not (path / ADAPTER_CONFIG).is_file():
            raise SourceNotFound(f"{path} has no {ADAPTER_CONFIG}: not an adapter saved by the adapters library")
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

    def methods(self) -> list[str]:
        return adapter_methods(self.config["config"])

    def state_dict(self) -> dict[str, Any]:
        """All weights as numpy arrays (safetensors) or torch tensors (.bin, read with weights_only=True)."""
        path = self.weights_file
        if path.suffix == ".safetensors":
            shard = SafetensorsFile(path)
            return {
                info.name: bytes_to_array(shard.read_bytes(info.name), info.dtype, info.shape) for info in shard.infos()
            }
        return load_pickled_state_dict(path)


def adapter_methods(config: Any) -> list[str]:
    """The adapter methods an adapter config uses (mirrors ``adapters.AdapterMethod.get_from_config``)."""
    if isinstance(config, str):
        from adapters import AdapterConfig

        config = AdapterConfig.load(config).to_dict()
    methods = []
    if config.get("inv_adapter"):
        methods.append("invertible")
    architecture = config.get("architecture")
    if architecture == "union":
        for sub in config.get("configs", []):
            methods.extend(adapter_methods(sub))
    else:
        methods.append(METHOD_OF_ARCHITECTURE.get(architecture, architecture))
    return methods


def check_supported(adapter: AdapterFolder, hidden_size: int) -> None:
    unsupported = [m for m in adapter.methods() if m not in BIGBIRD_INTERFACE["adapter_methods"]]
    if unsupported:
        raise UnsupportedArchitecture(
            f"adapter {adapter.stored_name!r} ({adapter.path}) uses {', '.join(unsupported)}, which the "
            "adapters plugin interface cannot put on BigBird; supported: "
            f"{', '.join(BIGBIRD_INTERFACE['adapter_methods'])}"
        )
    adapter_hidden = adapter.config.get("hidden_size")
    if adapter_hidden is not None and int(adapter_hidden) != hidden_size:
        raise UnsupportedArchitecture(
            f"adapter {adapter.stored_name!r} was trained for hidden size {adapter_hidden}, the model has {hidden_size}"
        )


def rename_adapter_key(key: str, stored_name: str, new_name: str) -> tuple[str, str]:
    """(new key, role) for one adapter weight; an unmapped key is an error."""
    bare = key
    for prefix in SOURCE_PREFIXES:
        if bare.startswith(prefix):
            bare = bare[len(prefix) :]
            break
    escaped = re.escape(stored_name)
    for rule in ADAPTER_KEY_RULES:
        match = re.fullmatch(rule.source.replace(NAME, escaped), bare)
        if match:
            return match.expand(rule.target.replace(NAME, new_name.replace("\\", "\\\\"))), rule.role
    raise UnsupportedArchitecture(f"adapter {stored_name!r}: weight {key!r} has no BigBird mapping")


def renamed_adapter_config(adapter: AdapterFolder, new_name: str, hidden_size: int) -> dict[str, Any]:
    """The adapter's config as ``adapters`` would write it from the BigBird model."""
    require_adapters("transferring adapters")
    config = {key: value for key, value in adapter.config.items() if key not in {"model_class", "model_type"}}
    return {
        **config,
        "name": new_name,
        "model_type": "big_bird",
        "model_class": "BigBirdModel",
        "hidden_size": hidden_size,
        "version": "adapters." + adapters_version(),
    }


# ----------------------------------------------------------------------------- loading with checks


def init_adapters(model: Any) -> Any:
    """Make ``model`` adapter-capable: BigBird through the plugin interface, others natively."""
    require_adapters("adapters on a model")
    import adapters

    interface = bigbird_interface() if model.config.model_type == "big_bird" else None
    try:
        adapters.init(model, interface=interface)
    except ValueError as error:
        raise UnsupportedArchitecture(
            f"the adapters library cannot add adapters to a {model.config.model_type} model: {error}"
        ) from None
    if interface is not None:
        bind_layer_norm_hooks(model)
    return model


def bind_layer_norm_hooks(model: Any) -> int:
    """Give each layer's bottleneck hooks that layer's own LayerNorm; returns how many hooks were rebound.

    adapters 1.3.0 (``methods/bottleneck.py``, ``init_bottleneck``) builds the LayerNorm getters of the
    plugin interface as ``lambda: multigetattr(layer, ...)`` inside its loop over layers, so every layer's
    adapter reads the LAST layer's LayerNorm. Bottleneck adapters with ``original_ln_before`` (seq_bn,
    SPECTER2's "pfeiffer") then compute wrong outputs on any model whose layers' LayerNorms differ (every
    trained model). This is the one ctxext call needed after ``adapters.load_model(folder, BigBirdModel)``;
    it is idempotent and harmless once adapters binds the getters itself.
    """
    import functools

    from adapters.methods.bottleneck import hook_fn

    base = model.base_model
    interface = getattr(base, "adapter_interface", None)
    if interface is None:
        return 0
    rebound = 0
    hooked = [
        (f"{interface.layer_self_attn}.{interface.attn_o_proj}", interface.layer_ln_1),
        (interface.layer_output_proj, interface.layer_ln_2),
    ]
    for layer in _get_path(base, interface.model_layers):
        for projection_path, norm_path in hooked:
            projection = _get_path(layer, projection_path)
            norm = _get_path(layer, norm_path) if norm_path else None
            for key, hook in list(projection._forward_hooks.items()):
                if isinstance(hook, functools.partial) and hook.func is hook_fn:
                    getter = (lambda bound=norm: bound) if norm is not None else None
                    projection._forward_hooks[key] = functools.partial(hook_fn, hook.args[0], getter)
                    rebound += 1
    return rebound


def _get_path(module: Any, path: str) -> Any:
    for part in path.split("."):
        module = getattr(module, part)
    return module


def load_adapter_strictly(model: Any, folder: str | Path, load_as: str) -> str:
    """Load one adapter; any weight that is missing or left over is an error (adapters only logs them)."""
    loading_info: dict[str, list[str]] = {}
    try:
        name = model.load_adapter(str(folder), load_as=load_as, loading_info=loading_info, set_active=False)
    except OSError as error:
        raise SourceNotFound(f"adapter {folder}: {error}") from None
    problems = {key: value for key, value in loading_info.items() if value}
    if problems:
        details = "; ".join(
            f"{key}: {', '.join(value[:3])}{' ...' if len(value) > 3 else ''}" for key, value in problems.items()
        )
        raise CheckFailed(f"adapter {folder} does not fit the model ({details})")
    return name


def load_model_with_adapters(
    model_dir: str | Path, adapters: Sequence[str | Path] = (), *, active: str | None = None
) -> Any:
    """Load a model folder with adapter support, load ``adapters`` and activate one: the one documented call.

    Any missing or unexpected weight, of the base or of an adapter, is an error. ``adapters``: names under the
    folder's ``adapters/`` (what ``ctxext transfer`` and ``finetune --adapter`` write) or adapter folders;
    each loads under its folder's name; ``active`` (default: the first) is activated. BigBird goes through
    ``adapters.load_model(folder, BigBirdModel)``, which reads adapter_interface.json (a BigBird folder
    without it gets the interface passed explicitly), and gets every layer's own LayerNorm bound
    (:func:`bind_layer_norm_hooks`); other models load with transformers and the library's native support.
    """
    model = _model_with_adapter_support(Path(model_dir))
    names = [
        load_adapter_strictly(model, folder, folder.name) for folder in _adapter_folders(Path(model_dir), adapters)
    ]
    if names:
        model.set_active_adapters(active or names[0])
    if model.config.model_type == "big_bird":
        bind_layer_norm_hooks(model)
    return model.eval()


def _adapter_folders(model_dir: Path, adapters: Sequence[str | Path]) -> list[Path]:
    folders = []
    for adapter in adapters:
        candidates = [Path(adapter), *(root / "adapters" / str(adapter) for root in (model_dir, model_dir.parent))]
        found = next((folder for folder in candidates if (folder / ADAPTER_CONFIG).is_file()), None)
        if found is None:
            raise SourceNotFound(f"adapter {adapter!r}: no {ADAPTER_CONFIG} at {', '.join(map(str, candidates))}")
        folders.append(found)
    return folders


def _model_with_adapter_support(model_dir: Path) -> Any:
    require_adapters("loading a model with adapters")
    import adapters

    from ctxext.checks import load_model_strictly

    if read_json(model_dir / "config.json").get("model_type") != "big_bird":
        # every tensor is checked with the class the config names; adapters go on its base model
        return init_adapters(load_model_strictly(model_dir).base_model)
    from transformers import BigBirdModel

    interface = None if (model_dir / INTERFACE_FILE).is_file() else bigbird_interface()
    model, info = adapters.load_model(str(model_dir), BigBirdModel, interface, output_loading_info=True)
    problems = {key: value for key, value in info.items() if value and key != "error_msgs"}
    if problems or info.get("error_msgs"):
        raise CheckFailed(f"{model_dir} does not load cleanly with BigBirdModel: {problems or info}")
    return model


# ----------------------------------------------------------------------------- which attention ran


@contextlib.contextmanager
def attention_probe(model: Any) -> Iterator[list[str]]:
    """Record, per BigBird layer call, which attention ran: ``block_sparse`` or ``original_full``.

    The hook sits on each layer's ``attention`` module, which survives attention-type switches; ctxext's
    fixed-pattern attention (``block_sparse.use_block_sparse``) says itself what it ran.
    """
    seen: list[str] = []
    backbone = getattr(model, ENCODER_FAMILIES["big_bird"].prefix, model)
    handles = []
    for layer in backbone.encoder.layer:

        def hook(module: Any, inputs: Any, output: Any) -> None:
            ran = getattr(module.self, "ran", None)  # ctxext's attention says what it ran
            seen.append(ran or ("block_sparse" if "BlockSparse" in type(module.self).__name__ else "original_full"))

        handles.append(layer.attention.register_forward_hook(hook))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()
