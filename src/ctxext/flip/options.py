"""What flip works with: the decoder model types it takes, the tensors it treats by name, its heads and
poolings, and the tolerances of its checks."""

from __future__ import annotations

from enum import Enum

from ctxext.architectures import DECODER_FAMILIES, DecoderFamily
from ctxext.sentence_folder import Pooling as SentencePooling

SUPPORTED_MODEL_TYPES = tuple(DECODER_FAMILIES)
NOT_FLIPPED = {  # model types close to a supported one: what to flip instead
    "gemma3": "multimodal Gemma 3 (model_type gemma3) is not supported; flip its text model (gemma3_text, "
    "e.g. Gemma 3 270M / 1B)"
}
EMBEDDED_GGUF = {"gemma-3-270m": "gemma_gguf_path"}
LM_HEAD = "lm_head.weight"
QA_HEAD = ("qa_outputs.weight", "qa_outputs.bias")
# Relative bound of same-maths-different-order differences (left against right padding, pooling done by
# sentence-transformers against pooling here), by the dtype the model computes in: about its rounding step times
# the depth of the sums (measured on the tiny bf16 and fp16 fixtures of every family).
RELATIVE_TOLERANCE_OF = {"float32": 1e-5, "float64": 1e-5, "float16": 1e-2, "bfloat16": 5e-2}


class Pooling(str, Enum):
    """The poolings flip offers (its command's choices): those of :class:`ctxext.sentence_folder.Pooling` its
    checks compare with sentence-transformers, each equal to the one of the same name there."""

    mean = SentencePooling.mean.value
    last = SentencePooling.last.value
    cls = SentencePooling.cls.value


class Head(str, Enum):
    none = "none"
    qa = "qa"


def register() -> None:
    """Make flipped folders loadable with plain transformers Auto classes (idempotent, no remote code). The
    name every flipped model card gives; the classes and their registration live in ``ctxext.flip_models``."""
    from ctxext.flip_models import register as register_classes

    register_classes()


def family_of(model_type: str) -> DecoderFamily:
    """The decoder family of a source model type or of a flipped one (``ctxext_<family>_encoder``)."""
    return DECODER_FAMILIES[model_type.removeprefix("ctxext_").removesuffix("_encoder")]
