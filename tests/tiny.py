"""Tiny random models of every family ctxext handles, saved as real Hugging Face folders.

Shared by all test modules; each builder writes a folder and returns its path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WORDS = (
    "the a of and to in is was for on that with as by it at from this be are an or which his her their "
    "model position embedding long document attention sparse block token sentence paper abstract title "
    "science method result data train test pass key remember grass green sky blue sun yellow here we go "
    "there back again what"
).split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}

# family -> (config class, model class, config overrides)
FAMILIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "bert": ("BertConfig", "BertModel", {"max_position_embeddings": 64}),
    "roberta": ("RobertaConfig", "RobertaModel", {"max_position_embeddings": 66, "pad_token_id": 1}),
    "xlm-roberta": ("XLMRobertaConfig", "XLMRobertaModel", {"max_position_embeddings": 66, "pad_token_id": 1}),
    "camembert": ("CamembertConfig", "CamembertModel", {"max_position_embeddings": 66, "pad_token_id": 1}),
    "mpnet": ("MPNetConfig", "MPNetModel", {"max_position_embeddings": 66, "pad_token_id": 1}),
    "electra": ("ElectraConfig", "ElectraModel", {"max_position_embeddings": 64, "embedding_size": 32}),
    "distilbert": (
        "DistilBertConfig",
        "DistilBertModel",
        {"max_position_embeddings": 64, "dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64},
    ),
    "modernbert": (
        "ModernBertConfig",
        "ModernBertModel",
        {
            "max_position_embeddings": 128,
            "global_attn_every_n_layers": 2,
            "local_attention": 16,
            "pad_token_id": 0,
            "bos_token_id": 2,
            "eos_token_id": 3,
            "cls_token_id": 2,
            "sep_token_id": 3,
        },
    ),
    "llama": ("LlamaConfig", "LlamaForCausalLM", {"max_position_embeddings": 128, "num_key_value_heads": 2}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"max_position_embeddings": 128, "num_key_value_heads": 2}),
    "gemma3": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        {
            "max_position_embeddings": 128,
            "num_key_value_heads": 2,
            "head_dim": 8,
            "sliding_window": 8,
            "layer_types": ["sliding_attention", "full_attention"],
        },
    ),
    "mistral": (
        "MistralConfig",
        "MistralForCausalLM",
        {"max_position_embeddings": 128, "num_key_value_heads": 2, "sliding_window": None},
    ),
    "gemma2": (
        "Gemma2Config",
        "Gemma2ForCausalLM",
        {"max_position_embeddings": 128, "num_key_value_heads": 2, "head_dim": 8, "sliding_window": 8},
    ),
    "deberta-v2": ("DebertaV2Config", "DebertaV2Model", {"max_position_embeddings": 64}),
}
LEARNED_FAMILIES = ["bert", "roberta", "xlm-roberta", "camembert", "mpnet", "electra", "distilbert"]
ROPE_FAMILIES = ["modernbert", "llama", "qwen2", "gemma3"]


def vocabulary() -> list[str]:
    return SPECIAL + WORDS


def make_model(
    family: str, folder: Path, seed: int = 0, model_class: str | None = None, dtype: str = "float32", **overrides: Any
) -> Path:
    """A randomly initialised model of ``family`` saved (safetensors) to ``folder`` with a tokenizer;
    ``model_class`` saves another class of the family (``BertForMaskedLM``: the model with its head); ``dtype``:
    the dtype its weights ship in (bfloat16, float16, float32), as real checkpoints do."""
    import torch
    import transformers

    config_name, model_name, family_overrides = FAMILIES[family]
    model_name = model_class or model_name
    config = getattr(transformers, config_name)(
        vocab_size=len(vocabulary()), **{**TINY, **family_overrides, **overrides}
    )
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config).eval().to(getattr(torch, dtype))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    save_tokenizer(folder, config.max_position_embeddings - (2 if family_overrides.get("pad_token_id") == 1 else 0))
    return folder


def save_tokenizer(folder: Path, model_max_length: int, words: list[str] | None = None) -> None:
    """A word-level BERT tokenizer over the tiny vocabulary, built with the tokenizers library (transformers 5
    ignores ``BertTokenizerFast(vocab_file=)``), so it is the same on every supported stack."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    words = words or vocabulary()
    vocab = {word: index for index, word in enumerate(words)}
    backend = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = ("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[cls, sep]
    )
    backend.decoder = decoders.WordPiece()
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizerFast(
        tokenizer_object=backend,
        vocab_file=str(vocab_file),
        model_max_length=model_max_length,
        **{f"{role}_token": f"[{role.upper()}]" for role in ("unk", "sep", "pad", "cls", "mask")},
    )
    tokenizer.save_pretrained(folder)


def make_sentence_transformer(family: str, folder: Path, pooling: str = "mean", max_seq_length: int = 32) -> Path:
    """A sentence-transformers folder (Transformer at the root, Pooling, Normalize) around a tiny model."""
    make_model(family, folder)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False})
    )
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": TINY["hidden_size"],
                "pooling_mode_cls_token": pooling == "cls",
                "pooling_mode_mean_tokens": pooling == "mean",
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
            }
        )
    )
    (folder / "2_Normalize").mkdir(exist_ok=True)
    return folder
