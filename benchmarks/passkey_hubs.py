"""Where a model's wrong passkey answers go: for each length, Acc@1, the documents whose needle touches BigBird's
global blocks, and how many wrong top-1 answers land on those documents (same passkey sets as
benchmarks/passkey_forms.py).

    python benchmarks/passkey_hubs.py /tmp/pk2/finetuned-passages-2048-150 --lengths 2048,4096
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np
from passkey_forms import needles_in_global_blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--lengths", default="2048,4096")
    parser.add_argument("--documents", type=int, default=50)
    parser.add_argument("--queries", type=int, default=25)
    arguments = parser.parse_args()

    from ctxext.encode import load_encoder
    from ctxext.evaluate import passkey_sets, similarity

    lengths = [int(n) for n in arguments.lengths.split(",")]
    encoder = load_encoder(arguments.model)
    hubs = needles_in_global_blocks(arguments.model, lengths, arguments.documents, arguments.queries)
    for retrieval_set in passkey_sets(encoder.tokenizer, lengths, arguments.documents, arguments.queries):
        documents = encoder.encode(retrieval_set.documents, batch_size=2)
        top = similarity(encoder.encode(retrieval_set.queries), documents).argmax(1)
        wanted = np.array([next(iter(relevant)) for relevant in retrieval_set.relevant])
        wrong = top[top != wanted]
        on_hubs = int(np.isin(wrong, hubs[retrieval_set.length]).sum())
        print(
            f"{retrieval_set.length}: Acc@1 {np.mean(top == wanted):.2f}; global-block documents "
            f"{hubs[retrieval_set.length]}; {len(wrong)} wrong answers, {on_hubs} of them on those documents; "
            f"most chosen {Counter(top.tolist()).most_common(3)}",
            flush=True,
        )


if __name__ == "__main__":
    main()
