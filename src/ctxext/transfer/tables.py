"""The tables of a transfer to BigBird: one rule per tensor role, and the config fields carried, required and
defaulted per source model type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ctxext.architectures import ENCODER_FAMILIES

TARGETS = ("bigbird",)
TOLERANCE = 1e-4


# ----------------------------------------------------------------------------- the tensor table

COPY = "copy"
POSITIONS = "positions"
DROP = "drop"

BIGBIRD = ENCODER_FAMILIES["big_bird"]


@dataclass(frozen=True)
class TensorRule:
    """What happens to the tensors of one role (``ctxext.architectures``; weight and bias alike)."""

    role: str
    action: str = COPY
    why: str = ""


BERT_TO_BIGBIRD: tuple[TensorRule, ...] = (
    TensorRule("token_embd"),
    TensorRule("position_embd", POSITIONS),
    TensorRule("token_types"),
    TensorRule("token_embd_norm"),
    TensorRule("attn_q"),
    TensorRule("attn_k"),
    TensorRule("attn_v"),
    TensorRule("attn_output"),
    TensorRule("attn_output_norm"),
    TensorRule("ffn_up"),
    TensorRule("ffn_down"),
    TensorRule("layer_output_norm"),
    TensorRule("pooler"),  # pooler.dense.* -> pooler.*
    TensorRule("buffers", DROP, "non-persistent buffer in BigBird, rebuilt from max_position_embeddings"),
    TensorRule(
        "pretraining_heads", DROP, "pre-training head: BigBirdModel has none (the base model is what gets transferred)"
    ),
)
RULES = {rule.role: rule for rule in BERT_TO_BIGBIRD}
POOLER = [BIGBIRD.tensor_name("pooler.weight"), BIGBIRD.tensor_name("pooler.bias")]

# ----------------------------------------------------------------------------- the config table

# Fields with the same meaning in BigBird: taken from the source config completed with its own class
# defaults (never BigBird's: its hidden_act, vocab_size and special ids differ from BERT's).
CONFIG_CARRIED = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "type_vocab_size",
    "initializer_range",
    "layer_norm_eps",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "sep_token_id",
    "classifier_dropout",
    "use_cache",
    "dtype",
    "id2label",
    "label2id",
    "problem_type",
    "finetuning_task",
    "tokenizer_class",
    "chunk_size_feed_forward",
)
# Source fields whose value BigBird cannot represent: the transfer refuses any other value.
CONFIG_REQUIRED = {"position_embedding_type": "absolute", "is_decoder": False, "add_cross_attention": False}

# transformers' defaults (BertConfig, RobertaConfig, ...) for the model fields a hand-written source config may
# leave out; a saved config carries them all. As data, so the surgery needs no transformers import.
_BERT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
    "bos_token_id": None,
    "eos_token_id": None,
    "classifier_dropout": None,
    "use_cache": True,
    **CONFIG_REQUIRED,
}
_ROBERTA_TOKENS = {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}
SOURCE_CONFIG_DEFAULTS: dict[str, dict[str, Any]] = {
    "bert": _BERT_DEFAULTS,
    "roberta": {**_BERT_DEFAULTS, **_ROBERTA_TOKENS, "vocab_size": 50265},
    "xlm-roberta": {**_BERT_DEFAULTS, **_ROBERTA_TOKENS},
    "camembert": {**_BERT_DEFAULTS, **_ROBERTA_TOKENS},
}
# The model types transfer reads: BERT's tensor layout (``ctxext.architectures``), a config it can complete.
SOURCE_MODEL_TYPES = tuple(SOURCE_CONFIG_DEFAULTS)
PRETRAINING_HEADS = tuple(sorted({root for t in SOURCE_MODEL_TYPES for root in ENCODER_FAMILIES[t].head_roots}))
# Fields every transformers config has (generation settings, labels, output flags); BigBird reads them as any
# model does, so a source's values for them are not reported as left out.
GENERIC_CONFIG_FIELDS = frozenset(
    {
        "_name_or_path",
        "add_cross_attention",
        "architectures",
        "bad_words_ids",
        "begin_suppress_tokens",
        "bos_token_id",
        "chunk_size_feed_forward",
        "cross_attention_hidden_size",
        "decoder_start_token_id",
        "diversity_penalty",
        "do_sample",
        "dtype",
        "torch_dtype",
        "early_stopping",
        "encoder_no_repeat_ngram_size",
        "eos_token_id",
        "exponential_decay_length_penalty",
        "finetuning_task",
        "forced_bos_token_id",
        "forced_eos_token_id",
        "id2label",
        "is_decoder",
        "is_encoder_decoder",
        "label2id",
        "length_penalty",
        "max_length",
        "min_length",
        "model_type",
        "no_repeat_ngram_size",
        "num_beam_groups",
        "num_beams",
        "num_return_sequences",
        "output_attentions",
        "output_hidden_states",
        "output_scores",
        "pad_token_id",
        "prefix",
        "problem_type",
        "pruned_heads",
        "remove_invalid_values",
        "repetition_penalty",
        "return_dict",
        "return_dict_in_generate",
        "sep_token_id",
        "suppress_tokens",
        "task_specific_params",
        "temperature",
        "tf_legacy_loss",
        "tie_encoder_decoder",
        "tie_word_embeddings",
        "tokenizer_class",
        "top_k",
        "top_p",
        "torchscript",
        "transformers_version",
        "typical_p",
        "use_bfloat16",
    }
)
