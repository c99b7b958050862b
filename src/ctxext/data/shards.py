"""Building one data set with N processes or machines: ``--shard I/N`` makes a command keep the records of its
I-th share of the documents (by a hash of the document id, so the same on every machine and in every run), and
``ctxext data merge`` joins the N outputs into the data set one process would have made, after checking that they
are the N shares of one run."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctxext.checkpoint import ProgressFn, no_progress
from ctxext.data.formats import first_line, read_parquet_rows
from ctxext.data.options import InputFormat, OutputFormat
from ctxext.data.output import OUTPUT_FORMATS, CountedOutput, FileOutput, InputRecord, open_writer, output_format
from ctxext.data.sources import SourceFile
from ctxext.errors import InvalidArgument
from ctxext.io import file_manifest_path, input_file, is_ctxext_manifest, read_json, read_jsonl


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
    """The N shard outputs of one run (JSON lines or Parquet, each with its ctxext manifest), joined in shard order
    into ``out`` (JSON lines, or Parquet from Parquet parts): refused unless they are the shards 0..N-1 of the same
    command on the same inputs and options."""
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
            if _without_counts(manifest[key]) != _without_counts(first[key]):
                raise InvalidArgument(f"{path} was made by another run ({key} differs from {ordered[0][1]})")
        if {**manifest["options"], "shard": None} != {**first["options"], "shard": None}:
            raise InvalidArgument(f"{path} was made with other options than {ordered[0][1]}")
    out = Path(out).expanduser().absolute()
    kind, schema = _merged_format([path for _, path in ordered], out)
    sources = [SourceFile("part", path, InputFormat(OUTPUT_FORMATS[path.suffix.lower()].value)) for _, path in ordered]
    output = FileOutput(out, sources, force=force)
    with output.writing(lambda path: open_writer(path, kind, schema, MERGED_ROWS_PER_GROUP)) as writer:
        for done, (_, path) in enumerate(ordered):
            for _, record in _part_rows(path):
                writer.write([record])
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


def _without_counts(value: Any) -> Any:
    """A manifest's ``inputs`` without what each shard counted in them (its own share of each file)."""
    if isinstance(value, list):
        return [{k: v for k, v in item.items() if k != "counts"} if isinstance(item, dict) else item for item in value]
    return value


MERGED_ROWS_PER_GROUP = 2048
"""Rows per Parquet row group of a merged output."""


def _merged_format(parts: list[Path], out: Path) -> tuple[OutputFormat, Any]:
    """The output's format (by its suffix) and, for Parquet, the parts' schema. The parts must all be JSON lines or
    all Parquet; Parquet output needs Parquet parts (whose schema it keeps)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    kind = output_format(out)
    part_kinds = {OUTPUT_FORMATS.get(path.suffix.lower()) for path in parts}
    if None in part_kinds:
        raise InvalidArgument("a part is neither *.jsonl nor *.parquet: not a shard of a ctxext data command")
    if len(part_kinds) > 1:
        raise InvalidArgument("the parts mix *.jsonl and *.parquet: shards of one run are all of one format")
    if kind == OutputFormat.jsonl:
        return kind, None
    if part_kinds != {OutputFormat.parquet}:
        raise InvalidArgument(
            f"output {out.name}: the parts are JSON lines; name the output *.jsonl (or write the shards as *.parquet)"
        )
    try:
        return kind, pq.ParquetFile(parts[0]).schema_arrow.remove_metadata()
    except (pa.ArrowException, OSError) as error:
        raise InvalidArgument(f"{parts[0]}: not a readable Parquet file ({first_line(error)})") from None


def _part_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    return read_parquet_rows(path) if OUTPUT_FORMATS[path.suffix.lower()] == OutputFormat.parquet else read_jsonl(path)


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
