"""Refactors must not change what ctxext writes: the sha256 of every tensor that ``interpolate``,
``transfer``, ``guide`` and ``flip`` write from the tiny fixtures is compared with the hashes recorded in
``tests/output_hashes-transformers<major>.json``: one file per supported transformers release, because each
builds the random fixtures (and random inits) with its own init code.

An intended change of output re-records them, on each stack: ``python tests/test_output_identity.py --record``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import specter2_tiny  # noqa: E402
import tiny  # noqa: E402
from ctxext.compat import transformers_major  # noqa: E402

RECORDED = Path(__file__).with_name(f"output_hashes-transformers{transformers_major()}.json")


def tensor_hashes(folder: Path) -> dict[str, str]:
    """File-relative name -> sha256 of each tensor's bytes, over every safetensors file in ``folder``."""
    from safetensors.numpy import load_file

    hashes = {}
    for path in sorted(folder.rglob("*.safetensors")):
        for name, array in sorted(load_file(path).items()):
            key = f"{path.relative_to(folder).as_posix()}:{name}"
            hashes[key] = f"{array.dtype}{list(array.shape)}:{hashlib.sha256(array.tobytes()).hexdigest()}"
    return hashes


def build_outputs(root: Path) -> dict[str, Path]:
    """Every output kind of the four surgery operations, written from the tiny fixtures under ``root``."""
    from ctxext.flip import Head, Pooling, flip
    from ctxext.guide import Init, guide
    from ctxext.positions import Method, interpolate
    from ctxext.transfer import transfer

    model = {
        family: tiny.make_model(family, root / "in" / family)
        for family in ("bert", "roberta", "modernbert", "mpnet", "gemma3", "llama")
    }
    out = root / "out"
    interpolate(str(model["bert"]), 256, str(out / "interpolate-bert-spline"))
    interpolate(str(model["roberta"]), 200, str(out / "interpolate-roberta-linear"), method=Method.linear)
    interpolate(str(model["mpnet"]), 256, str(out / "interpolate-mpnet-tile"), method=Method.tile)
    interpolate(str(model["modernbert"]), 512, str(out / "interpolate-modernbert-rope"))
    parts = specter2_tiny.make_specter2(root / "in" / "specter2")
    adapters = [(role, str(parts[role])) for role in specter2_tiny.SPECTER2_ADAPTERS]
    specter2 = out / "transfer-specter2"
    transfer(str(parts["base"]), "bigbird", 128, specter2, adapters=adapters, block_size=8, num_random_blocks=1)
    transfer(str(model["roberta"]), "bigbird", 128, out / "transfer-roberta", block_size=8, num_random_blocks=1)
    guide(str(model["bert"]), out / "guide-bert", dim=16, layers=3, init=Init.first)
    guide(str(model["modernbert"]), out / "guide-modernbert", dim=16, layers=3, init=Init.uniform)
    guide(str(model["mpnet"]), out / "guide-mpnet", dim=16, layers=2)
    flip(str(model["gemma3"]), out / "flip-gemma3", head=Head.qa, pooling=Pooling.mean)
    flip(str(model["llama"]), out / "flip-llama", pooling=Pooling.last)
    return {path.name: path for path in sorted(out.iterdir())}


def all_hashes(root: Path) -> dict[str, Any]:
    return {name: tensor_hashes(folder) for name, folder in build_outputs(root).items()}


def test_every_written_tensor_is_byte_for_byte_the_recorded_one(tmp_path):
    recorded = json.loads(RECORDED.read_text())
    got = all_hashes(tmp_path)
    assert sorted(got) == sorted(recorded)
    for output, hashes in recorded.items():
        changed = sorted(k for k in hashes.keys() | got[output].keys() if hashes.get(k) != got[output].get(k))
        assert not changed, f"{output}: {changed[:5]}"


if __name__ == "__main__":
    import tempfile

    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/test_output_identity.py --record")
    with tempfile.TemporaryDirectory() as tmp:
        RECORDED.write_text(json.dumps(all_hashes(Path(tmp)), indent=1, sort_keys=True) + "\n")
    print(f"recorded {RECORDED}")
