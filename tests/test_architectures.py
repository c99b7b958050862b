"""The encoder tables of ``ctxext.architectures`` against the tensors transformers really writes."""

from __future__ import annotations

import pytest

import tiny
from ctxext.architectures import BUFFERS, ENCODER_FAMILIES, LEARNED, POSITIONS, ROPE, buffer_kind, position_scheme

# model type -> the tiny family of tests/tiny.py and the classes whose every tensor must have a role
CLASSES = {
    "bert": ("bert", ["BertModel", "BertForMaskedLM"]),
    "roberta": ("roberta", ["RobertaModel", "RobertaForMaskedLM"]),
    "xlm-roberta": ("xlm-roberta", ["XLMRobertaForMaskedLM"]),
    "camembert": ("camembert", ["CamembertForMaskedLM"]),
    "mpnet": ("mpnet", ["MPNetModel", "MPNetForMaskedLM"]),
    "electra": ("electra", ["ElectraForMaskedLM"]),
    "distilbert": ("distilbert", ["DistilBertForMaskedLM"]),
    "modernbert": ("modernbert", ["ModernBertForMaskedLM"]),
    "deberta-v2": ("deberta-v2", ["DebertaV2ForMaskedLM"]),
}


def _state_names(family: str, class_name: str, **overrides) -> list[str]:
    import transformers

    config_name, _, family_overrides = tiny.FAMILIES[family]
    config = getattr(transformers, config_name)(
        vocab_size=len(tiny.vocabulary()), **{**tiny.TINY, **family_overrides, **overrides}
    )
    return list(getattr(transformers, class_name)(config).state_dict())


def _roles(model_type: str, names: list[str]) -> dict[str, tuple[str, int | None]]:
    family = ENCODER_FAMILIES[model_type]
    found = {}
    for name in names:
        if buffer_kind(name) is not None or name in family.aliases:
            continue
        relative = name.removeprefix(family.prefix + ".") if not name.startswith(family.head_roots) else name
        role = family.role_of(relative)
        assert role is not None, f"{model_type}: {name} has no role"
        assert (family.prefix + "." if relative != name else "") + family.tensor_name(*role) == name
        found[name] = role
    return found


@pytest.mark.parametrize("model_type", sorted(CLASSES))
def test_every_tensor_of_each_family_has_exactly_one_role_and_maps_back_to_its_name(model_type):
    family, classes = CLASSES[model_type]
    for class_name in classes:
        roles = _roles(model_type, _state_names(family, class_name))
        assert len(set(roles.values())) == len(roles)
        assert any(role == ("token_embd.weight", None) for role in roles.values())
        assert any(block == 1 for _, block in roles.values())


def test_bigbird_keeps_bert_block_names_and_a_pooler_without_dense():
    import transformers

    config = transformers.BigBirdConfig(vocab_size=len(tiny.vocabulary()), **tiny.TINY, max_position_embeddings=64)
    names = list(transformers.BigBirdForMaskedLM(config).state_dict())
    roles = _roles("big_bird", names)
    assert set(roles.values()) >= {("attn_q.weight", 0), ("position_embd.weight", None)}
    assert ENCODER_FAMILIES["big_bird"].tensor_name("pooler.weight") == "pooler.weight"
    buffers = {name for name, _ in transformers.BigBirdModel(config).named_buffers()}
    assert set(BUFFERS) <= buffers


def test_an_unknown_tensor_has_no_role():
    bert = ENCODER_FAMILIES["bert"]
    assert bert.role_of("encoder.layer.0.attention.self.rotary.weight") is None
    assert bert.role_of("encoder.layer.x.attention.self.query.weight") is None
    assert bert.role_of("embeddings.word_embeddings.weight") == ("token_embd.weight", None)


def test_position_schemes_follow_the_family_and_the_config_switches():
    assert position_scheme({"model_type": "roberta"}) == LEARNED and POSITIONS["roberta"].offset.value != "none"
    assert position_scheme({"model_type": "bert", "position_embedding_type": "relative_key"}) == (
        "relative_key positions"
    )
    assert position_scheme({"model_type": "distilbert", "sinusoidal_pos_embds": True}) == "fixed sinusoidal positions"
    assert position_scheme({"model_type": "modernbert"}) == ROPE
    assert position_scheme({"model_type": "deberta-v2"}) == "relative positions"


def test_the_encoder_reads_reserved_position_rows_and_decoder_pooling_from_the_architecture_table():
    from types import SimpleNamespace

    from ctxext.architectures import CAUSAL_DECODER_TYPES, DECODER_FAMILIES
    from ctxext.encode import _model_max_length

    unlimited = SimpleNamespace(model_type=None, model_max_length=10**30)
    for model_type, usable in (("xlm-roberta-xl", 512), ("roberta", 512), ("mpnet", 512), ("bert", 514)):
        config = {"model_type": model_type, "max_position_embeddings": 514, "pad_token_id": 1}
        assert _model_max_length(config, unlimited) == usable, model_type
    assert set(DECODER_FAMILIES) <= CAUSAL_DECODER_TYPES and "bert" not in CAUSAL_DECODER_TYPES
