"""What the global registers of `transfer --global-registers` do to an untrained BigBird: passkey Acc@1 with the
registers left out of mean pooling, as the reserved tokens or replaced by another token, and with the registers
masked out of attention altogether (then only their positions remain: the text starts at position 64).

    python benchmarks/passkey_registers.py /tmp/pk/bigbird-registers --lengths 256,2048,4096 \
        --variants "[unused],[PAD],.,[SEP],[MASK],[CLS],masked"

Same passkey sets as benchmarks/passkey_forms.py (50 documents, 25 queries per length).
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a BigBird folder written by `ctxext transfer --global-registers`")
    parser.add_argument("--lengths", default="256,2048,4096")
    parser.add_argument("--documents", type=int, default=50)
    parser.add_argument("--queries", type=int, default=25)
    parser.add_argument(
        "--variants",
        default="[unused],[PAD],masked",
        help="[unused]: the reserved tokens; a token: registers replaced by it; masked: no attention",
    )
    arguments = parser.parse_args()

    from ctxext.encode import load_encoder
    from ctxext.evaluate import accuracy_at_1, passkey_sets, similarity

    encoder = load_encoder(arguments.model)
    lengths = [int(n) for n in arguments.lengths.split(",")]
    sets = passkey_sets(encoder.tokenizer, lengths, arguments.documents, arguments.queries)
    registers = register_ids(encoder.tokenizer)
    for variant in arguments.variants.split(","):
        started = time.perf_counter()
        scores = []
        for retrieval_set in sets:
            queries = encode_without_registers(encoder, retrieval_set.queries, registers, variant)
            documents = encode_without_registers(encoder, retrieval_set.documents, registers, variant)
            scores.append(accuracy_at_1(similarity(queries, documents), retrieval_set.relevant))
        print(
            f"{variant:<10}"
            + " ".join(f"{n}: {score:.2f}" for n, score in zip(lengths, scores, strict=True))
            + f"   ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )


def register_ids(tokenizer):  # noqa: ANN001, ANN201
    """The ids the tokenizer's template adds around any text besides [CLS] and [SEP]: the registers."""
    import torch

    added = tokenizer("")["input_ids"]
    return torch.tensor([i for i in added if i not in (tokenizer.cls_token_id, tokenizer.sep_token_id)])


def encode_without_registers(encoder, texts: list[str], registers, variant: str, batch_size: int = 2):  # noqa: ANN001
    """Mean-pooled, normalised embeddings with the register tokens left out of the pooling."""
    import numpy as np
    import torch

    from ctxext.encode import pool

    tokenizer = encoder.tokenizer
    rows = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size],
            truncation=True,
            max_length=encoder.max_length,
            padding=True,
            return_tensors="pt",
        )
        is_register = torch.isin(batch["input_ids"], registers)
        text_mask = batch["attention_mask"] * (~is_register)
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        if variant == "masked":
            attention_mask = text_mask
        elif variant != "[unused]":
            input_ids = torch.where(is_register, tokenizer.convert_tokens_to_ids(variant), input_ids)
        with torch.inference_mode():
            hidden = encoder.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        rows.append(torch.nn.functional.normalize(pool(hidden, text_mask, "mean"), dim=-1).numpy())
    return np.concatenate(rows)


if __name__ == "__main__":
    main()
