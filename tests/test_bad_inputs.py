"""A catalogue of bad and hostile inputs across every command.

Each case must end with the documented exit code (docs/errors.md), exactly one line on stderr naming the
problem, no traceback, nothing new beside the target, and every file that was there before unchanged
(sha256 of the whole working folder before and after).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ctxext.cli import app
from ctxext.data.formats import read_beir

NOT_FOUND, UNSUPPORTED, INVALID, EXISTS, CORRUPT, CHECK_FAILED = 2, 3, 4, 5, 6, 7


class Scene:
    """The working folder of one case: inputs are made here, and the command runs from here."""

    def __init__(self, root: Path, tiny_models: Callable[..., Path]):
        self.root = root
        self.tiny_models = tiny_models

    def model(self, family: str = "bert", name: str = "src") -> Path:
        return self.tiny_models(family, copy_to=self.root / name)

    def file(self, name: str, content: bytes | str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    def jsonl(self, name: str, records: list) -> Path:
        return self.file(name, "".join(json.dumps(r) + "\n" for r in records))

    def folder(self, name: str, **files: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        for file_name, content in files.items():
            (path / file_name).write_text(content)
        return path

    def ctxext_output(self, name: str) -> Path:
        """A folder that looks like a previous ctxext output (its manifest)."""
        return self.folder(name, **{"manifest.json": json.dumps({"command": "interpolate", "libraries": {}})})

    def weights(self, name: str = "src", edit: Callable[[dict], None] | None = None, raw: bytes | None = None) -> Path:
        """A tiny BERT whose safetensors header was edited (or whose file was replaced by ``raw``)."""
        source = self.model(name=name)
        weights = source / "model.safetensors"
        data = weights.read_bytes()
        if raw is None:
            (length,) = struct.unpack("<Q", data[:8])
            header = json.loads(data[8 : 8 + length])
            edit(header)
            encoded = json.dumps(header).encode()
            encoded += b" " * (-len(encoded) % 8)
            raw = struct.pack("<Q", len(encoded)) + encoded + data[8 + length :]
        weights.write_bytes(raw)
        return source

    def config(self, content: str, name: str = "src") -> Path:
        source = self.model(name=name)
        (source / "config.json").write_text(content)
        return source

    def remote_code_model(self) -> Path:
        """A model whose config points at its own Python code (never run: there is none)."""
        config = json.loads((self.tiny_models("bert") / "config.json").read_text())
        config.update(
            model_type="custom_thing",
            auto_map={
                "AutoConfig": "modeling.CustomConfig",
                "AutoModel": "modeling.CustomModel",
                "AutoModelForMaskedLM": "modeling.CustomModel",
            },
        )
        return self.config(json.dumps(config), name="remote")

    def text_records(self, count: int = 12) -> Path:
        words = "the model reads a long document about position embedding and sparse attention".split()
        return self.jsonl("texts.jsonl", [{"text": " ".join(words[i % 5 :] + words)} for i in range(count)])

    def pipeline(self, name: str = "pipeline.json", **config) -> Path:
        """A pipeline config: interpolate-finetune on the tiny BERT unless ``config`` says otherwise; a key
        given as None is left out."""
        base = {
            "pipeline": "interpolate-finetune",
            "source": str(self.model()),
            "data": {"triplets": {"corpus": str(self.documents())}},
            "interpolate": {"len": 96, "linear": True},
            "finetune": {"max_len": 32, "steps": 1},
        }
        merged = {key: value for key, value in {**base, **config}.items() if value is not None}
        return self.file(name, json.dumps(merged))

    def documents(self, name: str = "docs.jsonl", count: int = 4) -> Path:
        """Long-document records (title and sections) in the tiny tokenizer's words."""
        words = "the model reads a long document about position embedding and sparse attention".split()
        sections = [{"heading": f"part {n}", "text": " ".join(words[n:] + words * 6)} for n in range(6)]
        return self.jsonl(
            name, [{"id": f"doc-{n}", "title": f"document {n}", "sections": sections} for n in range(count)]
        )

    def inside_output(self, name: str, content: str | bytes = "{}") -> Path:
        """A file inside ``out``, a previous ctxext output (so --force would replace the folder holding it)."""
        self.ctxext_output("out")
        return self.file(f"out/{name}", content)

    def corrupt_parquet(self, name: str) -> Path:
        """A Parquet file whose footer reads but whose first row group's pages are overwritten."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        words = "the model reads a long document about position embedding and sparse attention "
        rows = [{"id": f"doc-{n}", "title": f"document {n}", "text": words * 8} for n in range(4)]
        path = self.root / name
        pq.write_table(pa.Table.from_pylist(rows), path)
        data = bytearray(path.read_bytes())
        data[8:68] = b"\xab" * 60
        path.write_bytes(bytes(data))
        return path

    def triplets(self) -> Path:
        return self.jsonl(
            "triplets.jsonl",
            [{"query": "long model", "positive": "a long document about the model", "negative": "the sky is blue"}] * 4,
        )


def first_tensor(header: dict) -> dict:
    return header[next(k for k in header if k != "__metadata__")]


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@dataclass
class Case:
    name: str
    build: Callable[[Scene], list]
    exit_code: int
    says: tuple[str, ...] = ()


def case(name: str, exit_code: int, *says: str) -> Callable[[Callable[[Scene], list]], Case]:
    return lambda build: Case(name, build, exit_code, says)


def bert_nan(s: Scene) -> Path:
    import numpy as np
    from safetensors.numpy import load_file, save_file

    source = s.model(name="nan")
    tensors = load_file(source / "model.safetensors")
    name = next(n for n in tensors if n.endswith("query.weight"))
    tensors[name] = np.full_like(tensors[name], np.nan)
    save_file(tensors, source / "model.safetensors", metadata={"format": "pt"})
    return source


def config_inside_stage_output(s: Scene) -> Path:
    """A pipeline config kept inside the folder its first stage writes (a previous run's output)."""
    s.ctxext_output("run/interpolated")
    return s.file("run/interpolated/p.json", s.pipeline().read_text())


T = ["--max-len", 32, "--query-max-len", 16]  # within the tiny models' 64 positions
O = ["-o", "out"]  # noqa: E741 - the output every case names unless it tests the output itself

CASES: list[Case] = [
    # --- interpolate: sources
    case("interpolate: missing source", NOT_FOUND, "not a local folder")(
        lambda s: ["interpolate", "nope", "--len", 96, *O]
    ),
    case("interpolate: source is a file", NOT_FOUND, "is a file")(
        lambda s: ["interpolate", s.file("model.bin", b"x"), "--len", 96, *O]
    ),
    case("interpolate: empty source name", NOT_FOUND, "empty")(lambda s: ["interpolate", "", "--len", 96, *O]),
    case("interpolate: folder without config", NOT_FOUND, "no config.json")(
        lambda s: ["interpolate", s.folder("empty"), "--len", 96, *O]
    ),
    case("interpolate: folder without weights", NOT_FOUND, "has no weights")(
        lambda s: ["interpolate", (s.model(), (s.root / "src" / "model.safetensors").unlink())[0], "--len", 96, *O]
    ),
    case("interpolate: config.json is a list", CORRUPT, "not a JSON object")(
        lambda s: ["interpolate", s.config("[1, 2]"), "--len", 96, *O]
    ),
    case("interpolate: config.json is not JSON", CORRUPT, "config.json", "not valid JSON")(
        lambda s: ["interpolate", s.config("{oops"), "--len", 96, *O]
    ),
    case("interpolate: config.json is not UTF-8", CORRUPT, "not UTF-8")(
        lambda s: [
            "interpolate",
            (s.model(), (s.root / "src" / "config.json").write_bytes(b"\xff\xfe{"))[0],
            "--len",
            96,
            *O,
        ]
    ),
    case("interpolate: config.json nested 100000 deep", CORRUPT, "not valid JSON")(
        lambda s: [
            "interpolate",
            (s.model(), (s.root / "src" / "config.json").write_bytes(nested(100_000)))[0],
            "--len",
            96,
            *O,
        ]
    ),
    case("interpolate: modules.json is not a list", CORRUPT, "modules.json")(
        lambda s: ["interpolate", (s.model(), (s.root / "src" / "modules.json").write_text("{}"))[0], "--len", 96, *O]
    ),
    case("interpolate: broken symlink as source", NOT_FOUND, "broken symbolic link")(
        lambda s: ["interpolate", (os.symlink(s.root / "gone", s.root / "link"), s.root / "link")[1], "--len", 96, *O]
    ),
    case("interpolate: symlink loop as source", NOT_FOUND, "link loop")(
        lambda s: ["interpolate", (os.symlink(s.root / "loop", s.root / "loop"), s.root / "loop")[1], "--len", 96, *O]
    ),
    case("interpolate: unknown model type", UNSUPPORTED)(
        lambda s: [
            "interpolate",
            s.config(json.dumps({"model_type": "nonesuch", "architectures": ["X"]})),
            "--len",
            96,
            *O,
        ]
    ),
    case("interpolate: relative positions (deberta-v2)", UNSUPPORTED, "relative positions")(
        lambda s: ["interpolate", s.model("deberta-v2"), "--len", 96, *O]
    ),
    case("embed: a model that needs remote code", UNSUPPORTED, "trust_remote_code")(
        lambda s: ["embed", s.remote_code_model(), s.text_records(), "-o", "e.npy"]
    ),
    case("evaluate: a model that needs remote code", UNSUPPORTED, "trust_remote_code")(
        lambda s: ["evaluate", s.remote_code_model(), "--lengths", "64"]
    ),
    case("mlm: a model that needs remote code", UNSUPPORTED, "trust_remote_code")(
        lambda s: ["mlm", s.remote_code_model(), "--data", s.text_records(), *O]
    ),
    case("interpolate: remote code only", UNSUPPORTED)(
        lambda s: [
            "interpolate",
            s.config(
                json.dumps({"model_type": "custom_thing", "auto_map": {"AutoModel": "modeling_custom.CustomModel"}})
            ),
            "--len",
            96,
            *O,
        ]
    ),
    # --- interpolate: weights
    case("safetensors: header length past the file", CORRUPT, "corrupt safetensors header")(
        lambda s: ["interpolate", s.weights(raw=struct.pack("<Q", 2**40) + b"{}"), "--len", 96, *O]
    ),
    case("safetensors: shorter than 8 bytes", CORRUPT, "not a safetensors file")(
        lambda s: ["interpolate", s.weights(raw=b"abc"), "--len", 96, *O]
    ),
    case("safetensors: header not JSON", CORRUPT, "not valid JSON")(
        lambda s: ["interpolate", s.weights(raw=struct.pack("<Q", 8) + b"{{{{{{{{"), "--len", 96, *O]
    ),
    case("safetensors: header nested 50000 deep", CORRUPT, "not valid JSON")(
        lambda s: ["interpolate", s.weights(raw=struct.pack("<Q", 100_000) + nested(50_000)), "--len", 96, *O]
    ),
    case("safetensors: header is a list", CORRUPT, "not a JSON object")(
        lambda s: ["interpolate", s.weights(raw=struct.pack("<Q", 8) + b"[1,2,3] "), "--len", 96, *O]
    ),
    case("safetensors: offsets past the end", CORRUPT, "does not fit the file")(
        lambda s: [
            "interpolate",
            s.weights(edit=lambda h: first_tensor(h)["data_offsets"].__setitem__(1, 10**9)),
            "--len",
            96,
            *O,
        ]
    ),
    case("safetensors: float shape", CORRUPT, "non-negative whole numbers")(
        lambda s: [
            "interpolate",
            s.weights(
                edit=lambda h: first_tensor(h).__setitem__("shape", [float(d) for d in first_tensor(h)["shape"]])
            ),
            "--len",
            96,
            *O,
        ]
    ),
    case("safetensors: negative shape", CORRUPT, "non-negative whole numbers")(
        lambda s: [
            "interpolate",
            s.weights(edit=lambda h: first_tensor(h).__setitem__("shape", [-d for d in first_tensor(h)["shape"]])),
            "--len",
            96,
            *O,
        ]
    ),
    case("safetensors: unknown dtype", CORRUPT, "known dtype")(
        lambda s: [
            "interpolate",
            s.weights(edit=lambda h: first_tensor(h).__setitem__("dtype", "F128")),
            "--len",
            96,
            *O,
        ]
    ),
    case("safetensors: entry is a string", CORRUPT, "corrupt safetensors header entry")(
        lambda s: [
            "interpolate",
            s.weights(edit=lambda h: h.__setitem__(next(k for k in h if k != "__metadata__"), "oops")),
            "--len",
            96,
            *O,
        ]
    ),
    case("safetensors: file cut short", CORRUPT)(
        lambda s: [
            "interpolate",
            s.weights(raw=(s.tiny_models("bert") / "model.safetensors").read_bytes()[:-100]),
            "--len",
            96,
            *O,
        ]
    ),
    case("pytorch .bin: not a pickle", CORRUPT, "weights_only=True")(
        lambda s: [
            "interpolate",
            (
                s.model(),
                (s.root / "src" / "model.safetensors").unlink(),
                s.file("src/pytorch_model.bin", b"not a pickle at all"),
            )[0],
            "--len",
            96,
            *O,
        ]
    ),
    case("pytorch .bin: code in the pickle is never run", CORRUPT, "weights_only=True")(
        lambda s: [
            "interpolate",
            (
                s.model(),
                (s.root / "src" / "model.safetensors").unlink(),
                s.file("src/pytorch_model.bin", b"cos\nsystem\n(S'touch pwned'\ntR."),
            )[0],
            "--len",
            96,
            *O,
        ]
    ),
    # --- interpolate: options
    case("interpolate: --len 0", INVALID, "--len", "'0'")(lambda s: ["interpolate", s.model(), "--len", 0, *O]),
    case("interpolate: --len abc", INVALID, "--len", "'abc'")(lambda s: ["interpolate", s.model(), "--len", "abc", *O]),
    case("interpolate: --len -5", INVALID, "--len")(lambda s: ["interpolate", s.model(), "--len", -5, *O]),
    case("interpolate: --len 1000000000", INVALID, "1000000000")(
        lambda s: ["interpolate", s.model(), "--len", 1_000_000_000, *O]
    ),
    case("interpolate: --len shorter than the table", INVALID, "not above")(
        lambda s: ["interpolate", s.model(), "--len", 16, *O]
    ),
    case("interpolate: missing --len", INVALID, "--len")(lambda s: ["interpolate", s.model(), *O]),
    case("interpolate: missing -o", INVALID, "--out")(lambda s: ["interpolate", s.model(), "--len", 96]),
    case("interpolate: --offset banana", INVALID, "--offset", "banana")(
        lambda s: ["interpolate", s.model(), "--len", 96, "--offset", "banana", *O]
    ),
    case("interpolate: --offset -1", INVALID, "--offset")(
        lambda s: ["interpolate", s.model(), "--len", 96, "--offset", "-1", *O]
    ),
    case("interpolate: --grid wobbly", INVALID, "--grid")(
        lambda s: ["interpolate", s.model(), "--len", 96, "--grid", "wobbly", *O]
    ),
    case("interpolate: --rope-scaling wobbly", INVALID, "--rope-scaling")(
        lambda s: ["interpolate", s.model("llama"), "--len", 256, "--rope-scaling", "wobbly", *O]
    ),
    case("interpolate: two methods", INVALID, "choose one")(
        lambda s: ["interpolate", s.model(), "--len", 96, "--linear", "--tile", *O]
    ),
    case("interpolate: unknown option", INVALID, "--frobnicate")(
        lambda s: ["interpolate", s.model(), "--len", 96, "--frobnicate", *O]
    ),
    case("unknown command", INVALID, "frobnicate")(lambda s: ["frobnicate"]),
    # --- outputs
    case("output: -o '' --force is the current directory", EXISTS, "current directory")(
        lambda s: ["interpolate", s.model(), "--len", 96, "-o", "", "--force"]
    ),
    case("output: -o . --force", EXISTS, "current directory")(
        lambda s: ["interpolate", s.model(), "--len", 96, "-o", ".", "--force"]
    ),
    case("output: -o .. --force", EXISTS, "parent of the current directory")(
        lambda s: ["interpolate", s.model(), "--len", 96, "-o", "..", "--force"]
    ),
    case("output: -o / --force", EXISTS)(lambda s: ["interpolate", s.model(), "--len", 96, "-o", "/", "--force"]),
    case("output: -o the source --force", EXISTS, "input")(
        lambda s: ["interpolate", s.model(), "--len", 96, "-o", "src", "--force"]
    ),
    case("output: -o the source's parent --force", EXISTS, "holds the input")(
        lambda s: ["interpolate", s.model(name="models/mine"), "--len", 96, "-o", "models", "--force"]
    ),
    case("output: -o a folder inside the source --force", EXISTS, "inside the input")(
        lambda s: ["interpolate", (s.model(), s.ctxext_output("src/sub"))[0], "--len", 96, "-o", "src/sub", "--force"]
    ),
    case("output: -o a folder ctxext did not write --force", EXISTS, "not a ctxext output")(
        lambda s: ["interpolate", s.model(), "--len", 96, "-o", s.folder("mine", **{"notes.txt": "keep"}), "--force"]
    ),
    case("output: a manifest that is not ctxext's --force", EXISTS, "not a ctxext output")(
        lambda s: ["interpolate", s.model(), "--len", 96, "-o", s.folder("mine", **{"manifest.json": "[]"}), "--force"]
    ),
    case("output: existing folder without --force", EXISTS, "already exists", "--force")(
        lambda s: ["interpolate", s.model(), "--len", 96, "-o", s.ctxext_output("old")]
    ),
    case("output: an existing file", EXISTS, "not a folder")(
        lambda s: ["interpolate", s.model(), "--len", 96, "-o", s.file("out.txt", "mine"), "--force"]
    ),
    case("output: a symbolic link to a ctxext output", EXISTS, "symbolic link")(
        lambda s: [
            "interpolate",
            s.model(),
            "--len",
            96,
            "-o",
            (s.ctxext_output("real"), os.symlink(s.root / "real", s.root / "link"), "link")[2],
            "--force",
        ]
    ),
    case("output: the home folder", EXISTS, "home folder")(
        lambda s: ["interpolate", s.model(), "--len", 96, "-o", "~", "--force"]
    ),
    # --- transfer
    case("transfer: unknown target", UNSUPPORTED, "bigbird")(
        lambda s: ["transfer", s.model(), "longformer", "--len", 128, *O]
    ),
    case("transfer: --len 0", INVALID, "--len")(lambda s: ["transfer", s.model(), "bigbird", "--len", 0, *O]),
    case("transfer: non-BERT source", UNSUPPORTED)(
        lambda s: ["transfer", s.model("deberta-v2"), "bigbird", "--len", 512, "--block-size", 16, *O]
    ),
    case("transfer: -o the source --force", EXISTS, "input")(
        lambda s: ["transfer", s.model(), "bigbird", "--len", 512, "--block-size", 16, "-o", "src", "--force"]
    ),
    case("transfer: missing adapter folder", NOT_FOUND)(
        lambda s: ["transfer", s.model(), "bigbird", "--len", 512, "--block-size", 16, "--adapter", "./no-adapter", *O]
    ),
    # --- guide
    case("guide: --dim 0", INVALID, "--dim")(lambda s: ["guide", s.model(), "--dim", 0, *O]),
    case("guide: --layers 0", INVALID, "--layers", "'0'")(
        lambda s: ["guide", s.model(), "--dim", 16, "--layers", 0, *O]
    ),
    case("guide: wider than the teacher", INVALID)(lambda s: ["guide", s.model(), "--dim", 64, *O]),
    case("guide: --init wobbly", INVALID)(lambda s: ["guide", s.model(), "--dim", 16, "--init", "wobbly", *O]),
    case("guide: -o the teacher --force", EXISTS, "input")(
        lambda s: ["guide", s.model(), "--dim", 16, "-o", "src", "--force"]
    ),
    # --- embed
    case("embed: missing input", NOT_FOUND, "does not exist")(
        lambda s: ["embed", s.model(), "nope.jsonl", "-o", "e.npy"]
    ),
    case("embed: input is a folder", INVALID, "is a folder")(
        lambda s: ["embed", s.model(), s.folder("docs"), "-o", "e.npy"]
    ),
    case("embed: input is a device", INVALID, "not a regular file")(
        lambda s: ["embed", s.model(), "/dev/zero", "-o", "e.npy"]
    ),
    case("embed: empty input", INVALID, "holds no documents")(
        lambda s: ["embed", s.model(), s.file("d.jsonl", ""), "-o", "e.npy"]
    ),
    case("embed: input not UTF-8", INVALID, "d.jsonl:2", "not UTF-8")(
        lambda s: ["embed", s.model(), s.file("d.jsonl", b'{"text": "a"}\n{"text": "\xff\xfe"}\n'), "-o", "e.npy"]
    ),
    case("embed: a line that is not JSON", INVALID, "d.jsonl:1", "not valid JSON")(
        lambda s: ["embed", s.model(), s.file("d.jsonl", "{text\n"), "-o", "e.npy"]
    ),
    case("embed: a line that is a list", INVALID, "d.jsonl:1", "JSON object")(
        lambda s: ["embed", s.model(), s.file("d.jsonl", "[1]\n"), "-o", "e.npy"]
    ),
    case("embed: null text", INVALID, "d.jsonl:1", "null")(
        lambda s: ["embed", s.model(), s.jsonl("d.jsonl", [{"text": None}]), "-o", "e.npy"]
    ),
    case("embed: numeric text", INVALID, "d.jsonl:1", "must be a string")(
        lambda s: ["embed", s.model(), s.jsonl("d.jsonl", [{"text": 5}]), "-o", "e.npy"]
    ),
    case("embed: no text fields", INVALID, "d.jsonl:1", "'text'")(
        lambda s: ["embed", s.model(), s.jsonl("d.jsonl", [{"body": "x"}]), "-o", "e.npy"]
    ),
    case("embed: --batch-size 0", INVALID, "--batch-size")(
        lambda s: ["embed", s.model(), s.text_records(), "-o", "e.npy", "--batch-size", 0]
    ),
    case("embed: -o the input --force", EXISTS, "input")(
        lambda s: ["embed", s.model(), s.text_records(), "-o", "texts.jsonl", "--force"]
    ),
    case("embed: -o a file ctxext did not write --force", EXISTS, "not written by ctxext")(
        lambda s: ["embed", s.model(), s.text_records(), "-o", s.file("mine.npy", b"mine"), "--force"]
    ),
    case("embed: -o an existing file without --force", EXISTS, "already exists")(
        lambda s: ["embed", s.model(), s.text_records(), "-o", s.file("mine.npy", b"mine")]
    ),
    case("embed: -o a folder", EXISTS, "not a file")(
        lambda s: ["embed", s.model(), s.text_records(), "-o", s.ctxext_output("dir.npy"), "--force"]
    ),
    case("embed: missing adapter", NOT_FOUND)(
        lambda s: ["embed", s.model(), s.text_records(), "-o", "e.npy", "--adapter", "./nope"]
    ),
    # --- evaluate
    case("evaluate: --lengths 0", INVALID, "--lengths")(lambda s: ["evaluate", s.model(), "--lengths", "0"]),
    case("evaluate: --lengths ''", INVALID, "--lengths")(lambda s: ["evaluate", s.model(), "--lengths", ""]),
    case("evaluate: negative --lengths", INVALID, "--lengths")(lambda s: ["evaluate", s.model(), "--lengths", "-5"]),
    case("evaluate: --lengths abc", INVALID, "--lengths")(lambda s: ["evaluate", s.model(), "--lengths", "abc"]),
    case("evaluate: --lengths 1000000000", INVALID, "1000000000")(
        lambda s: ["evaluate", s.model(), "--lengths", "1000000000"]
    ),
    case("evaluate: --chunk 0", INVALID, "--chunk")(lambda s: ["evaluate", s.model(), "--lengths", "64", "--chunk", 0]),
    case("evaluate: --truncate 0", INVALID, "--truncate")(
        lambda s: ["evaluate", s.model(), "--lengths", "64", "--truncate", 0]
    ),
    case("evaluate: more queries than documents", INVALID, "--queries")(
        lambda s: ["evaluate", s.model(), "--lengths", "64", "--documents", 2, "--queries", 5]
    ),
    case("evaluate: unknown task", INVALID, "--task")(lambda s: ["evaluate", s.model(), "--task", "vibes"]),
    case("evaluate: retrieval without --beir", INVALID, "--beir")(
        lambda s: ["evaluate", s.model(), "--task", "retrieval", "--lengths", "64"]
    ),
    case("evaluate: --beir folder without qrels", NOT_FOUND, "BEIR")(
        lambda s: ["evaluate", s.model(), "--task", "retrieval", "--lengths", "64", "--beir", s.folder("beir")]
    ),
    case("evaluate: --plot over a file ctxext did not write", EXISTS, "not written by ctxext")(
        lambda s: ["evaluate", s.model(), "--lengths", "64", "--plot", s.file("mine.png", b"png"), "--force"]
    ),
    # --- average, verify, inspect
    case("average: one checkpoint", INVALID)(lambda s: ["average", s.model(), *O]),
    case("average: different models", INVALID, "differs")(
        lambda s: ["average", s.model(), s.model("roberta", name="other"), *O]
    ),
    case("average: a checkpoint holding NaN", CHECK_FAILED, "NaN")(lambda s: ["average", s.model(), bert_nan(s), *O]),
    case("average: -o the first checkpoint --force", EXISTS, "input")(
        lambda s: ["average", s.model(), s.model(name="b"), "-o", "src", "--force"]
    ),
    case("verify: no manifest", NOT_FOUND, "manifest.json")(lambda s: ["verify", s.model()]),
    case("verify: manifest not JSON", CORRUPT, "manifest.json")(
        lambda s: ["verify", (s.model(), s.file("src/manifest.json", "{oops"))[0]]
    ),
    case("verify: manifest is a list", CORRUPT, "malformed")(
        lambda s: ["verify", (s.model(), s.file("src/manifest.json", "[]"))[0]]
    ),
    case("verify: manifest without tensors", CORRUPT, "malformed")(
        lambda s: ["verify", (s.model(), s.file("src/manifest.json", json.dumps({"weights": {}})))[0]]
    ),
    case("inspect: missing", NOT_FOUND, "does not exist")(lambda s: ["inspect", "./nope"]),
    case("inspect: config.json is a number", CORRUPT, "not a JSON object")(lambda s: ["inspect", s.config("7")]),
    # --- data
    case("data corpus: a device", INVALID, "not a regular file")(
        lambda s: ["data", "corpus", "/dev/zero", "-o", "c.parquet"]
    ),
    case("data corpus: missing source", NOT_FOUND, "does not exist")(
        lambda s: ["data", "corpus", "nope", "-o", "c.parquet"]
    ),
    case("data corpus: empty folder", INVALID, "holds no files")(
        lambda s: ["data", "corpus", s.folder("docs"), "-o", "c.parquet"]
    ),
    case("data corpus: wrong output suffix", INVALID, "parquet")(
        lambda s: ["data", "corpus", s.text_records(), "-o", "c.csv"]
    ),
    case("data corpus: --chunk 0", INVALID, "--chunk")(
        lambda s: ["data", "corpus", s.text_records(), "-o", "c.parquet", "--chunk", 0]
    ),
    case("data fit: -o an input --force", EXISTS, "input")(
        lambda s: [
            "data",
            "fit",
            s.folder("docs", **{"a.jsonl": '{"text": "some text"}'}),
            "-o",
            "docs/a.jsonl",
            "--force",
        ]
    ),
    case("data corpus: a jsonl line that is not JSON", CORRUPT)(
        lambda s: ["data", "corpus", s.file("d.jsonl", "{oops\n"), "-o", "c.parquet"]
    ),
    case("data corpus: not UTF-8 text", CORRUPT, "d.txt")(
        lambda s: ["data", "corpus", s.file("d.txt", b"\xff\xfe\xfa bad"), "-o", "c.parquet"]
    ),
    case("data fit: --budget 1", INVALID, "--budget", "'1'")(
        lambda s: ["data", "fit", s.text_records(), "-o", "f.jsonl", "--budget", 1]
    ),
    case("data fit: unknown strategy", INVALID, "strategy")(
        lambda s: ["data", "fit", s.text_records(), "-o", "f.jsonl", "--strategy", "vibes"]
    ),
    case("data triplets: fewer than two documents", INVALID, "two documents")(
        lambda s: ["data", "triplets", s.jsonl("one.jsonl", [{"title": "t", "text": "x " * 50}]), "-o", "t.jsonl"]
    ),
    case("data triplets: a malformed JSON record", CORRUPT, "docs.jsonl:5", "malformed JSON")(
        lambda s: ["data", "triplets", s.file("docs.jsonl", s.documents().read_text() + "{oops\n"), "-o", "t.jsonl"]
    ),
    case("data triplets: a record without text or sections", CORRUPT, "docs.jsonl:5", "no text field")(
        lambda s: ["data", "triplets", s.file("docs.jsonl", s.documents().read_text() + '{"id": 7}\n'), "-o", "t.jsonl"]
    ),
    case("data triplets: a huge single line", CORRUPT, "docs.jsonl:5", "longer than 32 MiB")(
        lambda s: [
            "data",
            "triplets",
            s.file("docs.jsonl", s.documents().read_bytes() + b"[" + b"1," * (16 * 2**20) + b"1]\n"),
            "-o",
            "t.jsonl",
        ]
    ),
    case("data triplets: a binary file named .jsonl", CORRUPT, "blob.jsonl:1", "binary data")(
        lambda s: ["data", "triplets", s.file("blob.jsonl", bytes(range(256)) * 64), "-o", "t.jsonl"]
    ),
    case("data triplets: a binary file named .md", CORRUPT, "blob.md", "binary data")(
        lambda s: ["data", "triplets", s.file("blob.md", b"# Title\n\0\0\0\1\2"), "-o", "t.jsonl"]
    ),
    case("data triplets: a Parquet file that is not Parquet", CORRUPT, "docs.parquet", "not a readable Parquet")(
        lambda s: ["data", "triplets", s.file("docs.parquet", b"PAR1 not really"), "-o", "t.jsonl"]
    ),
    case("data triplets: a Parquet row group that cannot be read", CORRUPT, "docs.parquet", "row group 0 (rows 0-3)")(
        lambda s: ["data", "triplets", s.corrupt_parquet("docs.parquet"), "-o", "t.parquet"]
    ),
    case("data triplets: wrong output suffix", INVALID, "*.parquet or *.jsonl")(
        lambda s: ["data", "triplets", s.documents(), "-o", "t.csv"]
    ),
    # --- training
    case("mlm: missing data", NOT_FOUND, "does not exist")(lambda s: ["mlm", s.model(), "--data", "nope.txt", *O]),
    case("mlm: data is a device", INVALID, "not a regular file")(
        lambda s: ["mlm", s.model(), "--data", "/dev/zero", *O]
    ),
    case("mlm: empty text file", INVALID, "holds no text")(
        lambda s: ["mlm", s.model(), "--data", s.file("empty.txt", ""), *O]
    ),
    case("distill: empty data", INVALID, "holds no text")(
        lambda s: [
            "distill",
            s.model(),
            "--teacher",
            s.model(name="t"),
            "--data",
            s.file("e.jsonl", "\n"),
            "--max-len",
            32,
            *O,
        ]
    ),
    case("data corpus: empty parquet file", CORRUPT, "Parquet")(
        lambda s: ["data", "corpus", s.file("e.parquet", b""), "-o", "c.parquet"]
    ),
    case("mlm: --mask 0", INVALID, "--mask")(lambda s: ["mlm", s.model(), "--data", s.text_records(), "--mask", 0, *O]),
    case("mlm: --lr -1", INVALID, "--lr")(
        lambda s: ["mlm", s.model(), "--data", s.text_records(), "--lr", -1, "--steps", 1, *O]
    ),
    case("mlm: --resume with no checkpoint", NOT_FOUND, "--resume")(
        lambda s: ["mlm", s.model(), "--data", s.text_records(), "--resume", *O]
    ),
    case("finetune: missing triplets", NOT_FOUND, "does not exist")(
        lambda s: ["finetune", s.model(), "--data", "nope.jsonl", *T, *O]
    ),
    case("finetune: triplets file is a folder", INVALID, "is a folder")(
        lambda s: ["finetune", s.model(), "--data", s.folder("t"), *T, *O]
    ),
    case("finetune: Parquet triplets that cannot be read", INVALID, "t.parquet", "row group 0")(
        lambda s: ["finetune", s.model(), "--data", s.corrupt_parquet("t.parquet"), *T, *O]
    ),
    case("finetune: a triplets line longer than 32 MiB", INVALID, "t.jsonl:1", "longer than 32 MiB")(
        lambda s: ["finetune", s.model(), "--data", s.file("t.jsonl", b'{"query": "' + b"a" * 2**25 + b'"}\n'), *T, *O]
    ),
    case("finetune: triplet without a negative", INVALID, "t.jsonl:1", "negative")(
        lambda s: ["finetune", s.model(), "--data", s.jsonl("t.jsonl", [{"query": "a", "positive": "b"}]), *T, *O]
    ),
    case("finetune: --temperature 0", INVALID, "--temperature")(
        lambda s: ["finetune", s.model(), "--data", s.triplets(), "--temperature", 0, *T, *O]
    ),
    case("finetune: --warmup 2", INVALID, "--warmup")(
        lambda s: ["finetune", s.model(), "--data", s.triplets(), "--warmup", 2, *T, *O]
    ),
    case("finetune: -o the source --force", EXISTS, "input")(
        lambda s: ["finetune", s.model(), "--data", s.triplets(), *T, "-o", "src", "--force"]
    ),
    case("distill: --pca-sample 1", INVALID, "--pca-sample")(
        lambda s: [
            "distill",
            s.model(),
            "--teacher",
            s.model(name="t"),
            "--data",
            s.text_records(),
            "--pca-sample",
            1,
            *O,
        ]
    ),
    case("distill: -o the teacher --force", EXISTS, "input")(
        lambda s: [
            "distill",
            s.model(),
            "--teacher",
            s.model(name="t"),
            "--data",
            s.text_records(),
            "-o",
            "t",
            "--force",
        ]
    ),
    # --- flip
    case("flip: an encoder is not causal", UNSUPPORTED)(lambda s: ["flip", s.model(), *O]),
    case("flip: --special-tokens without --head qa", INVALID, "--head qa")(
        lambda s: [
            "flip",
            s.model("llama"),
            "--special-tokens",
            s.file("tokens.json", '{"special_tokens": ["[A]"]}'),
            *O,
        ]
    ),
    case("flip: --special-tokens file missing", NOT_FOUND, "does not exist")(
        lambda s: ["flip", s.model("llama"), "--head", "qa", "--special-tokens", "nope.json", *O]
    ),
    case("flip: --pooling wobbly", INVALID, "pooling")(lambda s: ["flip", s.model("llama"), "--pooling", "wobbly", *O]),
    case("flip: missing --gguf file", NOT_FOUND)(lambda s: ["flip", s.folder("g"), "--gguf", "model.gguf", *O]),
    case("flip: -o the source --force", EXISTS, "input")(lambda s: ["flip", s.model("llama"), "-o", "src", "--force"]),
    case("finetune-qa: train file missing", NOT_FOUND, "does not exist")(
        lambda s: ["finetune-qa", s.model("llama"), "--train", "nope.jsonl", *O]
    ),
    # --- --force never replaces an input of the run: data, corpus, evaluation sets, configs
    case("mntp: --data inside the output --force", EXISTS, "holds the input")(
        lambda s: ["mntp", s.model("llama"), "--data", s.inside_output("t.txt", "some text " * 50), *O, "--force"]
    ),
    case("mlm: --data inside the output --force", EXISTS, "holds the input")(
        lambda s: ["mlm", s.model(), "--data", s.inside_output("t.txt", "some text " * 50), *O, "--force"]
    ),
    case("finetune: triplets inside the output --force", EXISTS, "holds the input")(
        lambda s: ["finetune", s.model(), "--data", s.inside_output("t.jsonl", s.triplets().read_text()), *O, "--force"]
    ),
    case("distill: --data inside the output --force", EXISTS, "holds the input")(
        lambda s: [
            *["distill", s.model(), "--teacher", s.model(name="t")],
            *["--data", s.inside_output("t.txt", "some text " * 50), *O, "--force"],
        ]
    ),
    case("finetune-qa: --train inside the output --force", EXISTS, "holds the input")(
        lambda s: ["finetune-qa", s.model("llama"), "--train", s.inside_output("qa.jsonl"), *O, "--force"]
    ),
    case("embed: input inside a folder output --force", EXISTS, "holds the input")(
        lambda s: ["embed", s.model(), s.inside_output("docs.jsonl", '{"text": "a"}\n'), "-o", "out", "--force"]
    ),
    case("extend: --corpus inside the output --force", EXISTS, "holds the input")(
        lambda s: [
            *["extend", s.model(), "--len", 128, "--min-tokens", 64],
            *["--corpus", s.inside_output("docs.jsonl", s.documents().read_text()), *O, "--force"],
        ]
    ),
    case("extend: -o the source --force", EXISTS, "input")(
        lambda s: ["extend", s.model(), "--len", 128, "--corpus", s.documents(), "-o", "src", "--force"]
    ),
    case("pipeline: the config inside a stage's output --force", EXISTS, "holds the input")(
        lambda s: ["pipeline", config_inside_stage_output(s), "--work", "run", "--force"]
    ),
    # --- pipeline configs: checked in full before any stage runs
    case("pipeline: a misspelt option in the last stage", INVALID, "finetune", "--stepz")(
        lambda s: ["pipeline", s.pipeline(finetune={"max_len": 32, "stepz": 1}), "--work", "run"]
    ),
    case("pipeline: a bad value in the last stage", INVALID, "finetune", "--steps")(
        lambda s: ["pipeline", s.pipeline(finetune={"max_len": 32, "steps": "many"}), "--work", "run"]
    ),
    case("pipeline: a misspelt evaluate option", INVALID, "evaluate", "--lenghts")(
        lambda s: ["pipeline", s.pipeline(evaluate={"lenghts": "64"}), "--work", "run"]
    ),
    case("pipeline: no source", INVALID, "'source'")(lambda s: ["pipeline", s.pipeline(source=None), "--work", "run"]),
    case("pipeline: no teacher for guide-distill", INVALID, "'teacher'")(
        lambda s: [
            "pipeline",
            s.pipeline(pipeline="guide-distill", source=None, interpolate=None, finetune=None),
            "--work",
            "run",
        ]
    ),
    case("pipeline: an unknown section", INVALID, "'finetun'")(
        lambda s: ["pipeline", s.pipeline(finetun={"steps": 1}), "--work", "run"]
    ),
    case("pipeline: --set an unknown key", INVALID, "'stepz'")(
        lambda s: ["pipeline", s.pipeline(), "--work", "run", "--set", "stepz=3"]
    ),
    case("pipeline: a section that is a list", INVALID, "finetune must be a mapping")(
        lambda s: ["pipeline", s.pipeline(finetune=[1, 2]), "--work", "run"]
    ),
    case("pipeline: an option whose value is a list", INVALID, "finetune.steps")(
        lambda s: ["pipeline", s.pipeline(finetune={"steps": [1] * 1000}), "--work", "run"]
    ),
    case("pipeline: a stage's data missing", INVALID, "data.triplets")(
        lambda s: ["pipeline", s.pipeline(data={}), "--work", "run"]
    ),
    case("pipeline: unknown data", INVALID, "'wikipedia'")(
        lambda s: ["pipeline", s.pipeline(data={"wikipedia": {}}), "--work", "run"]
    ),
    case("pipeline: the triplets corpus missing", INVALID, "does not exist")(
        lambda s: ["pipeline", s.pipeline(data={"triplets": {"corpus": "nope.jsonl"}}), "--work", "run"]
    ),
    case("pipeline: a revision that is a number", INVALID, "'revision'")(
        lambda s: ["pipeline", s.pipeline(revision=3), "--work", "run"]
    ),
    case("pipeline: a YAML alias bomb", INVALID, "aliases")(
        lambda s: [
            "pipeline",
            s.file(
                "bomb.yaml",
                "pipeline: interpolate-finetune\na: &a [x, x, x, x, x, x, x, x, x]\n"
                + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)),
            ),
            "--work",
            "run",
        ]
    ),
    case("pipeline: YAML nested 100,000 deep", INVALID, "nested")(
        lambda s: ["pipeline", s.file("deep.yaml", "[" * 100_000 + "]" * 100_000), "--work", "run"]
    ),
    case("pipeline: JSON nested 40 deep", INVALID, "levels")(
        lambda s: [
            "pipeline",
            s.file("deep.json", '{"pipeline": "interpolate-finetune", "x": ' + nested(40).decode() + "}"),
            "--work",
            "run",
        ]
    ),
    case("pipeline: a config over 1 MiB", INVALID, "MiB")(
        lambda s: [
            "pipeline",
            s.file("big.json", '{"pipeline": "interpolate-finetune", "about": "' + "x" * 2**20 + '"}'),
            "--work",
            "run",
        ]
    ),
    # --- extend: options and corpus checked before (or by) the first stage, in one line, leaving no work folder
    case("extend: --len 0", INVALID, "--len 0")(
        lambda s: ["extend", s.model(), "--len", 0, "--corpus", s.documents(), *O]
    ),
    case("extend: --len 1000000000", INVALID, "--len 1000000000")(
        lambda s: ["extend", s.model(), "--len", 1_000_000_000, "--corpus", s.documents(), *O]
    ),
    case("extend: an empty corpus", INVALID)(
        lambda s: ["extend", s.model(), "--len", 128, "--min-tokens", 64, "--corpus", s.file("e.jsonl", ""), *O]
    ),
    case("extend: a corpus of one document", NOT_FOUND, "held-out")(
        lambda s: ["extend", s.model(), "--len", 128, "--min-tokens", 64, "--corpus", s.documents(count=1), *O]
    ),
    case("extend: a binary corpus", CORRUPT, "not UTF-8")(
        lambda s: [
            *["extend", s.model(), "--len", 128, "--min-tokens", 64],
            *["--corpus", s.file("b.jsonl", bytes(range(256)) * 64), *O],
        ]
    ),
    case("extend: a misspelt --recipe", INVALID, "--recipe")(
        lambda s: ["extend", s.model(), "--len", 128, "--corpus", s.documents(), "--recipe", "bigbrd", *O]
    ),
]


# --- the evaluation and QA readers (evaluate --beir, finetune-qa) and embed: every field checked, file:line named

CORPUS = [
    {"_id": "d1", "title": "Otters", "text": "Otters live in rivers."},
    {"_id": "d2", "title": "Herons", "text": "Herons eat fish."},
]
QUERIES = [{"_id": "q1", "text": "where do otters live"}, {"_id": "q2", "text": "what do herons eat"}]
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n"


def beir(s: Scene, corpus: list | None = None, queries: list | None = None, qrels: str | None = None) -> Path:
    """A BEIR folder of two documents and two queries, with one file replaced."""
    s.jsonl("beir/corpus.jsonl", CORPUS if corpus is None else corpus)
    s.jsonl("beir/queries.jsonl", QUERIES if queries is None else queries)
    s.file("beir/qrels/test.tsv", QRELS if qrels is None else qrels)
    return s.root / "beir"


def evaluate(s: Scene, **files: Any) -> list:
    return ["evaluate", s.model(), "--task", "retrieval", "--lengths", "64", "--beir", beir(s, **files)]


SQUAD = {
    "id": "1",
    "question": "what colour is the sky",
    "context": "the sky is blue",
    "answers": {"text": ["blue"], "answer_start": [11]},
}


def squad(s: Scene, name: str = "qa.jsonl", **changes: Any) -> Path:
    """A SQuAD file whose second record has ``changes`` (``answers`` changes only the keys it names)."""
    record = {**SQUAD, **changes}
    if isinstance(changes.get("answers"), dict):
        record["answers"] = {**SQUAD["answers"], **changes["answers"]}
    return s.jsonl(name, [SQUAD, record])


def finetune_qa(s: Scene, train: Path, *extra: Any) -> list:
    return ["finetune-qa", s.model("llama"), "--train", train, *extra, "-o", "out"]


def without(record: dict, key: str) -> dict:
    return {k: v for k, v in record.items() if k != key}


READER_CASES: list[Case] = [
    # --- evaluate --beir: qrels
    case("evaluate --beir: an infinite qrels score", INVALID, "test.tsv:2", "'inf'", "finite number")(
        lambda s: evaluate(s, qrels="query-id\tcorpus-id\tscore\nq1\td1\tinf\n")
    ),
    case("evaluate --beir: a NaN qrels score", INVALID, "test.tsv:3", "finite number")(
        lambda s: evaluate(s, qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\tnan\n")
    ),
    case("evaluate --beir: a qrels score past the float range", INVALID, "test.tsv:2", "finite number")(
        lambda s: evaluate(s, qrels="query-id\tcorpus-id\tscore\nq1\td1\t1e999\n")
    ),
    case("evaluate --beir: a qrels score that is a word", INVALID, "test.tsv:2", "'high'")(
        lambda s: evaluate(s, qrels="query-id\tcorpus-id\tscore\nq1\td1\thigh\n")
    ),
    case("evaluate --beir: a qrels line of two fields", INVALID, "test.tsv:2", "tab-separated")(
        lambda s: evaluate(s, qrels="query-id\tcorpus-id\tscore\nq1 d1 1\n")
    ),
    case("evaluate --beir: qrels naming only unknown queries and documents", INVALID, "does not hold: 2")(
        lambda s: evaluate(s, qrels="query-id\tcorpus-id\tscore\nq9\td1\t1\nq1\td9\t1\n")
    ),
    # --- evaluate --beir: queries
    case("evaluate --beir: a null query", INVALID, "queries.jsonl:2: 'text' must be a string, not null")(
        lambda s: evaluate(s, queries=[QUERIES[0], {"_id": "q2", "text": None}])
    ),
    case("evaluate --beir: a query that is a list", INVALID, "queries.jsonl:1", "not a list")(
        lambda s: evaluate(s, queries=[{"_id": "q1", "text": ["where", "otters"]}, QUERIES[1]])
    ),
    case("evaluate --beir: a query without text", INVALID, "queries.jsonl:1", "no 'text' field")(
        lambda s: evaluate(s, queries=[{"_id": "q1"}, QUERIES[1]])
    ),
    case("evaluate --beir: a query without _id", INVALID, "queries.jsonl:2", "no '_id' field")(
        lambda s: evaluate(s, queries=[QUERIES[0], without(QUERIES[1], "_id")])
    ),
    case("evaluate --beir: a null query _id", INVALID, "queries.jsonl:1", "'_id' must be", "not null")(
        lambda s: evaluate(s, queries=[{**QUERIES[0], "_id": None}, QUERIES[1]])
    ),
    case("evaluate --beir: two queries with one _id", INVALID, "queries.jsonl:2", "already used on line 1")(
        lambda s: evaluate(s, queries=[QUERIES[0], {**QUERIES[1], "_id": "q1"}])
    ),
    case("evaluate --beir: a query group that is an object", INVALID, "queries.jsonl:1", "'group'")(
        lambda s: evaluate(s, queries=[{**QUERIES[0], "group": {"depth": 1}}, QUERIES[1]])
    ),
    # --- evaluate --beir: corpus
    case("evaluate --beir: a document whose text is a number", INVALID, "corpus.jsonl:2", "not 5")(
        lambda s: evaluate(s, corpus=[CORPUS[0], {**CORPUS[1], "text": 5}])
    ),
    case("evaluate --beir: a null document text", INVALID, "corpus.jsonl:1", "'text'", "not null")(
        lambda s: evaluate(s, corpus=[{**CORPUS[0], "text": None}, CORPUS[1]])
    ),
    case("evaluate --beir: a document title that is a list", INVALID, "corpus.jsonl:2", "'title'", "not a list")(
        lambda s: evaluate(s, corpus=[CORPUS[0], {**CORPUS[1], "title": ["Herons"]}])
    ),
    case("evaluate --beir: a document with neither text nor title", INVALID, "corpus.jsonl:2", "'text'")(
        lambda s: evaluate(s, corpus=[CORPUS[0], {"_id": "d2"}])
    ),
    case("evaluate --beir: a document without _id", INVALID, "corpus.jsonl:1", "no '_id' field")(
        lambda s: evaluate(s, corpus=[without(CORPUS[0], "_id"), CORPUS[1]])
    ),
    case("evaluate --beir: a document _id that is true", INVALID, "corpus.jsonl:2", "'_id' must be", "not true")(
        lambda s: evaluate(s, corpus=[CORPUS[0], {**CORPUS[1], "_id": True}])
    ),
    case("evaluate --beir: an empty document _id", INVALID, "corpus.jsonl:1", "an empty string")(
        lambda s: evaluate(s, corpus=[{**CORPUS[0], "_id": ""}, CORPUS[1]])
    ),
    case("evaluate --beir: two documents with one _id", INVALID, "corpus.jsonl:2", "'d1' was already used on line 1")(
        lambda s: evaluate(s, corpus=[CORPUS[0], {**CORPUS[1], "_id": "d1"}])
    ),
    # --- finetune-qa: SQuAD records
    case("finetune-qa: a null context", INVALID, "qa.jsonl:2: 'context' must be a string, not null")(
        lambda s: finetune_qa(s, squad(s, context=None))
    ),
    case("finetune-qa: a question that is a list", INVALID, "qa.jsonl:2", "'question' must be a string, not a list")(
        lambda s: finetune_qa(s, squad(s, question=["what", "colour"]))
    ),
    case("finetune-qa: a record without a question", INVALID, "qa.jsonl:2", "no 'question' field")(
        lambda s: finetune_qa(s, s.jsonl("qa.jsonl", [SQUAD, without(SQUAD, "question")]))
    ),
    case("finetune-qa: a record without answers", INVALID, "qa.jsonl:2", "no 'answers' field")(
        lambda s: finetune_qa(s, s.jsonl("qa.jsonl", [SQUAD, without(SQUAD, "answers")]))
    ),
    case("finetune-qa: answers that are a list", INVALID, "qa.jsonl:2", "'answers' must be an object")(
        lambda s: finetune_qa(s, s.jsonl("qa.jsonl", [SQUAD, {**SQUAD, "answers": ["blue"]}]))
    ),
    case("finetune-qa: more answer texts than starts", INVALID, "qa.jsonl:2", "holds 2 answers", "holds 1")(
        lambda s: finetune_qa(s, squad(s, answers={"text": ["blue", "sky"], "answer_start": [11]}))
    ),
    case("finetune-qa: answer_start is not a list", INVALID, "qa.jsonl:2", "'answers.answer_start' must be a list")(
        lambda s: finetune_qa(s, squad(s, answers={"answer_start": 11}))
    ),
    case("finetune-qa: an answer_start that is a string", INVALID, "qa.jsonl:2", "item 0 must be a whole number")(
        lambda s: finetune_qa(s, squad(s, answers={"answer_start": ["11"]}))
    ),
    case("finetune-qa: an answer_start that is a fraction", INVALID, "qa.jsonl:2", "whole number", "not 11.5")(
        lambda s: finetune_qa(s, squad(s, answers={"answer_start": [11.5]}))
    ),
    case("finetune-qa: a negative answer_start", INVALID, "qa.jsonl:2", "whole number >= 0, not -4")(
        lambda s: finetune_qa(s, squad(s, answers={"answer_start": [-4]}))
    ),
    case("finetune-qa: an answer text that is a number", INVALID, "qa.jsonl:2", "'answers.text' item 0")(
        lambda s: finetune_qa(s, squad(s, answers={"text": [7]}))
    ),
    case("finetune-qa: an empty answer text", INVALID, "qa.jsonl:2", "non-empty string")(
        lambda s: finetune_qa(s, squad(s, answers={"text": [""]}))
    ),
    case("finetune-qa: an answer_start past the context", CORRUPT, "qa.jsonl:2", "past the end of the context")(
        lambda s: finetune_qa(s, squad(s, answers={"answer_start": [4000]}))
    ),
    case("finetune-qa: an answer not at its start", CORRUPT, "qa.jsonl:2", "'blue' is not at answer_start 4")(
        lambda s: finetune_qa(s, squad(s, answers={"answer_start": [4]}))
    ),
    case("finetune-qa: an id that is a list", INVALID, "qa.jsonl:2", "'id' must be")(
        lambda s: finetune_qa(s, squad(s, id=[1]))
    ),
    case("finetune-qa: a null question in the --eval file", INVALID, "dev.jsonl:2", "'question'", "not null")(
        lambda s: finetune_qa(s, s.jsonl("qa.jsonl", [SQUAD]), "--eval", squad(s, "dev.jsonl", question=None))
    ),
    # --- embed
    case("embed: a text that is a list", INVALID, "d.jsonl:2", "'text' must be a string, not a list")(
        lambda s: ["embed", s.model(), s.jsonl("d.jsonl", [{"text": "a"}, {"text": ["a", "b"]}]), "-o", "e.npy"]
    ),
    case("embed: a title that is an object", INVALID, "d.jsonl:1", "'title' must be a string, not an object")(
        lambda s: ["embed", s.model(), s.jsonl("d.jsonl", [{"title": {"x": 1}, "abstract": "a"}]), "-o", "e.npy"]
    ),
    case("embed: a huge text that is not a string names it briefly", INVALID, "d.jsonl:1", "not a list")(
        lambda s: ["embed", s.model(), s.jsonl("d.jsonl", [{"text": ["word"] * 200_000}]), "-o", "e.npy"]
    ),
]
CASES += READER_CASES


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root``: sha256 of files, the target of links, "dir" for folders."""
    seen = {}
    for folder, folders, files in os.walk(root):
        for name in folders + files:
            path = Path(folder) / name
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                seen[relative] = "link:" + os.readlink(path)
            elif path.is_dir():
                seen[relative] = "dir"
            else:
                seen[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return seen


@pytest.fixture
def prompts(monkeypatch) -> list[str]:
    """Questions asked on the terminal (transformers asks whether to run a model's code): there must be none."""
    asked: list[str] = []
    monkeypatch.setattr("builtins.input", lambda question="": asked.append(question) or "n")
    return asked


@pytest.fixture
def scene(tiny_models, tmp_path, monkeypatch) -> Scene:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return Scene(work, tiny_models)


def test_the_catalogue_holds_at_least_80_distinct_cases():
    assert len({c.name for c in CASES}) == len(CASES) >= 80


@pytest.mark.parametrize("bad", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_one_line_its_exit_code_and_changes_nothing(bad: Case, scene: Scene, prompts: list[str]):
    check_case(bad, scene, prompts)


def check_case(bad: Case, scene: Scene, prompts: list[str]) -> None:
    """The catalogue's rule for one case: its exit code, one line, no traceback, nothing changed or left."""
    arguments = [str(a) for a in bad.build(scene)]
    before = snapshot(scene.root)
    result = CliRunner().invoke(app, arguments)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == bad.exit_code, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output and "internal error" not in lines[0]
    for fragment in bad.says:
        assert fragment in lines[0], lines[0]
    assert snapshot(scene.root) == before
    assert not (scene.root.parent / "pwned").exists() and not Path("pwned").exists()
    assert prompts == []
    shutil.rmtree(scene.root, ignore_errors=True)


def test_beir_reader_keeps_what_published_folders_hold(tmp_path, tiny_models):
    """Null titles, whole-number ids, blank and negative (TREC: judged not relevant) qrels lines, and qrels
    lines naming a query or document the folder does not hold (ArguAna and NFCorpus have some) are read."""
    s = Scene(tmp_path, tiny_models)
    folder = beir(
        s,
        corpus=[{"_id": 1, "title": None, "text": "Otters live in rivers."}, CORPUS[1]],
        queries=[{"_id": 7, "text": "where do otters live", "group": 3}, QUERIES[1]],
        qrels="query-id\tcorpus-id\tscore\n7\t1\t2\n\nq2\td2\t-2\nq2\tgone\t1\nq9\td2\t1\n",
    )
    beir_folder = read_beir(folder)
    assert beir_folder.documents == ["Otters live in rivers.", "Herons. Herons eat fish."]
    assert beir_folder.queries == ["where do otters live"]
    assert beir_folder.relevant == [{0: 2.0}] and beir_folder.groups == ["3"]


def test_a_reader_error_shows_a_long_value_briefly(tmp_path, tiny_models):
    from ctxext.errors import InvalidArgument

    s = Scene(tmp_path, tiny_models)
    folder = beir(s, qrels="query-id\tcorpus-id\tscore\nq1\td1\t" + "9" * 5000 + "x\n")
    with pytest.raises(InvalidArgument) as raised:
        read_beir(folder)
    assert len(str(raised.value)) < len(str(folder)) + 200
