"""Building one data set with N processes or machines: ``--shard I/N`` makes a command keep the records of its
I-th share of the documents (by a hash of the document id, so the same on every machine and in every run), and
``ctxext data merge`` joins the N outputs into the data set one process would have made, after checking that they
are the N shares of one run."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctxext.checkpoint import ProgressFn, no_progress
from ctxext.data.options import InputFormat
from ctxext.data.output import CountedOutput, FileOutput, InputRecord, JsonlWriter
from ctxext.data.sources import SourceFile
from ctxext.errors import InvalidArgument
from ctxext.io import file_manifest_path, input_file, is_ctxext_manifest, read_json


@dataclass(frozen=True)
class Shard:
    """The ``index``-th of ``count`` shares of a corpus."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str | None) -> Shard | None:
        if text is None:
            return None
        index, _, count = str(text).partition("/")
        if not (index.isdigit() and count.isdigit()) or not 0 <= int(index) < int(count):
            raise InvalidArgument(f"--shard {text!r} must be I/N with 0 <= I < N, e.g. 0/4")
        return cls(int(index), int(count))

    def holds(self, document_id: str) -> bool:
        return zlib.crc32(document_id.encode("utf-8")) % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass
class MergeResult(CountedOutput):
    path: Path
    manifest: dict[str, Any]

    title = "merge"
    columns = ("rows",)

    def summary(self) -> dict[str, Any]:
        return {"output": str(self.path), "rows": self.manifest["output"]["rows"], "shards": len(self.count_rows())}

    def count_rows(self) -> dict[str, dict[str, Any]]:
        return {f"shard {part['shard']}": {"rows": part["rows"]} for part in self.manifest["parts"]}


def merge_shards(
    parts: list[str | Path], out: str | Path, *, force: bool = False, progress: ProgressFn = no_progress, argv=None
) -> MergeResult:
    """The N shard outputs of one run (JSON lines, each with its ctxext manifest), joined in shard order into
    ``out``: refused unless they are the shards 0..N-1 of the same command on the same inputs and options."""
    read = sorted((_shard_manifest(Path(part)) + (Path(part),) for part in parts), key=lambda item: item[0].index)
    ordered = [(manifest, path) for _, manifest, path in read]
    first, count = ordered[0][0], read[0][0].count
    shards = [str(shard) for shard, _, _ in read]
    if shards != [f"{index}/{count}" for index in range(count)]:
        raise InvalidArgument(
            f"the parts are shards {', '.join(shards)}: a merge needs each of 0/{count} .. {count - 1}/{count} once"
        )
    for manifest, path in ordered[1:]:
        for key in ("command", "inputs"):
            if manifest[key] != first[key]:
                raise InvalidArgument(f"{path} was made by another run ({key} differs from {ordered[0][1]})")
        if {**manifest["options"], "shard": None} != {**first["options"], "shard": None}:
            raise InvalidArgument(f"{path} was made with other options than {ordered[0][1]}")
    sources = [SourceFile("part", path, InputFormat.jsonl) for _, path in ordered]
    output = FileOutput(Path(out).expanduser().absolute(), sources, force=force)
    with output.writing(JsonlWriter) as writer:
        for done, (_, path) in enumerate(ordered):
            with path.open(encoding="utf-8") as lines:
                for line in lines:
                    writer.write([json.loads(line)])
            progress("merging shards", done + 1, len(ordered))
        output.finish(
            writer,
            empty="the shards hold no rows",
            command="data merge",
            options={
                "merged": first["command"],
                "shards": count,
                **{k: v for k, v in first["options"].items() if k != "shard"},
            },
            inputs=[InputRecord.of(source) for source in sources],
            counts={"rows": writer.rows},
            problems=[],
            argv=argv,
            extra={"parts": [{"shard": m["options"]["shard"], "rows": m["output"]["rows"]} for m, _ in ordered]},
        )
    return MergeResult(output.path, output.manifest)


def _shard_manifest(path: Path) -> tuple[Shard, dict[str, Any]]:
    input_file(path, "shard")
    manifest_path = file_manifest_path(path)
    if not is_ctxext_manifest(manifest_path):
        raise InvalidArgument(
            f"{path} has no ctxext manifest beside it ({manifest_path.name}): not a shard ctxext wrote"
        )
    manifest = read_json(manifest_path)
    if not (manifest.get("options") or {}).get("shard"):
        raise InvalidArgument(f"{path} is not a shard (its manifest records no --shard)")
    shard = Shard.parse(manifest["options"]["shard"])
    assert shard is not None
    return shard, manifest
