"""An adapter trained by ctxext (``finetune --adapter``, a few steps on the reference base), with ctxext's own
outputs for it: the CI interop job loads it with the adapters library and compares
(``tests/interop/test_adapters_library.py``). Run in ctxext's environment:

    python tests/interop/make_ctxext_trained.py tests/data/adapter_references
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path


def main(references: Path) -> None:
    import torch
    from safetensors.numpy import load_file
    from safetensors.torch import save_file

    from ctxext.bottleneck import load_model_with_adapters
    from ctxext.train import TrainSettings
    from ctxext.train.finetune import FinetuneOptions, finetune

    texts = json.loads((references / "texts.json").read_text())
    triplets = [{"query": text.split()[1], "positive": text, "negative": texts[1 - i]} for i, text in enumerate(texts)]
    with tempfile.TemporaryDirectory() as work:
        data = Path(work) / "triplets.jsonl"
        data.write_text("".join(json.dumps(t) + "\n" for t in triplets * 4))
        settings = TrainSettings(steps=3, batch_size=2, learning_rate=5e-2, save_every=100)
        options = FinetuneOptions(adapter="trained", max_len=32)
        finetune(str(references / "base"), [data], Path(work) / "out", options, settings=settings)
        target = references / "ctxext_trained"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(Path(work) / "out" / "adapters" / "trained", target / "trained")
    inputs = load_file(references / "outputs.safetensors")
    model = load_model_with_adapters(references / "base", [target / "trained"])
    with torch.no_grad():
        hidden = model(
            input_ids=torch.as_tensor(inputs["input_ids"]), attention_mask=torch.as_tensor(inputs["attention_mask"])
        ).last_hidden_state
    save_file({"trained": hidden.contiguous()}, str(target / "outputs.safetensors"))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
