"""What a flipped folder holds besides its config: every tensor, copied ones streamed from the source files (the
sentence-transformers modules come from :mod:`ctxext.sentence_folder`)."""

from __future__ import annotations

from ctxext.compat import no_init_weights
from ctxext.errors import UnsupportedArchitecture
from ctxext.flip.build import BuiltModel
from ctxext.flip.options import LM_HEAD
from ctxext.flip.source import LoadedSource
from ctxext.io import OutTensor
from ctxext.manifest import OperationRecord


def output_tensors(loaded: LoadedSource, built: BuiltModel, record: OperationRecord) -> list[OutTensor]:
    """Every tensor of the whole flipped model: copied ones streamed from the source files (byte for byte, one
    at a time), computed ones (a grown embedding, a QA head) and a GGUF's dequantized ones from memory."""
    computed = built.model.state_dict()
    used: set[str] = set()
    tensors = []
    for name in full_tensor_names(built):
        source_name = loaded.tensor_prefix + name
        if loaded.reader is not None and name not in built.changed:
            if source_name not in loaded.reader.infos:
                raise UnsupportedArchitecture(f"tensor {name} of the flipped model has no source tensor {source_name}")
            tensors.append(OutTensor.copied(loaded.reader, source_name, name))
            used.add(source_name)
            record.copied.append(name)  # byte for byte, under the encoder's name where it differs
            if source_name != name:
                record.renamed[source_name] = name
            continue
        tensors.append(OutTensor.from_tensor(name, computed[name].detach().contiguous()))
        if name in built.created:
            record.created.append(name)
        elif name in built.changed:
            record.modified.append(name)
        else:
            record.copied.append(name)  # dequantized from GGUF
    if loaded.reader is not None:
        used.update(loaded.tensor_prefix + n for n in built.changed if n not in built.created)
        leftover = sorted(set(loaded.reader.names) - used)
        unexpected = [n for n in leftover if n != LM_HEAD]
        if unexpected:
            raise UnsupportedArchitecture(f"source tensor {unexpected[0]} has no place in the flipped model")
        record.dropped.extend(leftover)
    else:
        record.dropped.append(LM_HEAD + " (tied to the embeddings in GGUF; an encoder has no LM head)")
    return tensors


def full_tensor_names(built: BuiltModel) -> list[str]:
    """The tensor names of the whole flipped model (the in-memory one may hold only the first layers), read from
    an instance on the meta device: no memory."""
    import torch

    if not built.probe:
        return list(built.model.state_dict())
    with torch.device("meta"), no_init_weights():
        return list(type(built.model)(built.config).state_dict())
