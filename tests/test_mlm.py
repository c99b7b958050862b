"""`ctxext mlm`: reading and packing text, masking, the Trainer loop, resuming, and the written model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import tiny
from ctxext.cli import app
from ctxext.errors import InvalidArgument, OutputExists, SourceNotFound
from ctxext.train import RunOptions, TrainSettings, train_mlm
from ctxext.train.mlm import (
    MaskingCollator,
    PackedDataset,
    masked_held_out,
    mlm_trainer,
    pack_documents,
    read_documents,
    split_held_out,
)
from ctxext.train.runner import ListDataset

runner = CliRunner()
QUIET = {"progress_bars": False, "logging_every": 1}


def sentences(count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(tiny.WORDS, size=int(rng.integers(8, 20)))) for _ in range(count)]


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(sentences(80)), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tokenizer(tiny_models):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_models("bert"))


# ----------------------------------------------------------------------------- text and packing


def test_reads_txt_paragraphs_jsonl_text_fields_and_parquet_text_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.txt").write_text("first paragraph\nstill first\n\nsecond\n\n\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text('{"text": "from jsonl", "id": 1}\n\n{"text": "again"}\n', encoding="utf-8")
    pq.write_table(pa.table({"text": ["from parquet", None], "n": [1, 2]}), tmp_path / "c.parquet")
    assert read_documents([tmp_path / "a.txt", tmp_path / "b.jsonl", tmp_path / "c.parquet"]) == [
        "first paragraph\nstill first",
        "second",
        "from jsonl",
        "again",
        "from parquet",
    ]
    assert len(read_documents([tmp_path])) == 5  # a folder stands for the files inside


def test_training_text_is_read_from_the_fields_data_corpus_reads(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.jsonl").write_text('{"body": "a body"}\n{"abstract": "an abstract", "title": "T"}\n', "utf-8")
    pq.write_table(pa.table({"content": ["some content"], "n": [1]}), tmp_path / "b.parquet")
    assert read_documents([tmp_path / "a.jsonl", tmp_path / "b.parquet"]) == ["a body", "an abstract", "some content"]


def test_bad_data_is_refused_with_a_clear_error(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"n": 1}\n', encoding="utf-8")
    with pytest.raises(InvalidArgument, match="bad.jsonl:1 has no text"):
        read_documents([tmp_path / "bad.jsonl"])
    (tmp_path / "x.csv").write_text("text\n", encoding="utf-8")
    with pytest.raises(InvalidArgument, match="unsupported type"):
        read_documents([tmp_path / "x.csv"])
    with pytest.raises(SourceNotFound):
        read_documents([tmp_path / "missing.txt"])


def test_mlm_and_data_corpus_read_the_same_files_of_a_folder(tiny_models, tmp_path):
    """One reader of local text (issue 32): known suffixes in any case, hidden files and folders left out, and a
    ctxext output with its manifest beside it (written into the folder earlier) never read back in."""
    folder = tmp_path / "docs"
    (folder / ".cache").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "o.txt").write_text("an earlier corpus " * 20, encoding="utf-8")
    earlier = runner.invoke(app, ["data", "corpus", str(tmp_path / "other"), "-o", str(folder / "old.parquet")])
    assert earlier.exit_code == 0, earlier.output
    (folder / "a.txt").write_text("\n\n".join(sentences(10, seed=1)), encoding="utf-8")
    (folder / "B.MD").write_text("# Notes\n\n" + "\n\n".join(sentences(10, seed=2)), encoding="utf-8")
    (folder / "c.jsonl").write_text(json.dumps({"text": " ".join(sentences(10, seed=3))}) + "\n", encoding="utf-8")
    (folder / ".hidden.txt").write_text("hidden " * 50, encoding="utf-8")
    (folder / ".cache" / "x.txt").write_text("cached " * 50, encoding="utf-8")
    (folder / "table.csv").write_text("text\nnot a corpus file\n", encoding="utf-8")
    corpus = runner.invoke(app, ["data", "corpus", str(folder), "-o", str(tmp_path / "corpus.parquet")])
    assert corpus.exit_code == 0, corpus.output
    trained = runner.invoke(
        app,
        [
            *("mlm", str(tiny_models("bert")), "--data", str(folder), "--max-len", "16", "--steps", "1"),
            *("--batch-size", "2", "-o", str(tmp_path / "mlm")),
        ],
    )
    assert trained.exit_code == 0, trained.output
    corpus_manifest = json.loads((tmp_path / "corpus.parquet.manifest.json").read_text())
    mlm_manifest = json.loads((tmp_path / "mlm" / "manifest.json").read_text())
    read_by_corpus = sorted(Path(entry["file"]).relative_to(folder).as_posix() for entry in corpus_manifest["inputs"])
    read_by_mlm = sorted(
        Path(name).relative_to(folder).as_posix()
        for name in mlm_manifest["operations"][0]["parameters"]["data_files_sha256"]
    )
    assert read_by_mlm == read_by_corpus == ["B.MD", "a.txt", "c.jsonl"]


def test_packing_fills_every_sequence_to_max_len_in_order(tokenizer):
    documents = sentences(30)
    packed = pack_documents(tokenizer, documents, 16)
    assert packed and all(len(ids) == 16 for ids in packed)
    assert all(ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id for ids in packed)
    stream = []
    for ids in tokenizer(documents, add_special_tokens=False)["input_ids"]:
        stream += ids + [tokenizer.sep_token_id]
    bodies = [token for ids in packed for token in ids[1:-1]]
    assert bodies == stream[: len(bodies)] and len(stream) - len(bodies) < 14


def test_held_out_masks_are_fixed_and_cover_the_requested_share(tokenizer):
    packed = pack_documents(tokenizer, sentences(200), 32)
    first, second = masked_held_out(tokenizer, packed, 0.3), masked_held_out(tokenizer, packed, 0.3)
    assert first == second
    labels = np.array([item["labels"] for item in first])
    special = np.isin(np.array(packed), tokenizer.all_special_ids)
    assert not (labels[special] != -100).any()  # special tokens are never masked
    share = (labels[~special] != -100).mean()
    assert 0.27 < share < 0.33


def test_training_masks_depend_on_seed_epoch_and_index_only(tokenizer):
    packed = pack_documents(tokenizer, sentences(100), 16)
    dataset, collator = PackedDataset(packed, seed=3), MaskingCollator(tokenizer, 0.3)
    together = collator([dataset[i] for i in range(4)])
    alone = collator([dataset[2]])
    assert (together["labels"][2] == alone["labels"][0]).all() and (
        together["input_ids"][2] == alone["input_ids"][0]
    ).all()
    dataset.set_epoch(1)
    assert not (collator([dataset[2]])["labels"][0] == alone["labels"][0]).all()


def test_held_out_split_depends_only_on_names():
    named = [(f"doc{i}", f"text {i}") for i in range(400)]
    train, held = split_held_out(named, 0.1)
    assert 20 < len(held) < 60 and len(train) + len(held) == 400
    assert split_held_out(list(reversed(named)), 0.1)[1] == list(reversed(held))


# ----------------------------------------------------------------------------- training


def test_loss_falls_over_a_few_steps_on_a_fixed_batch(tiny_models, tokenizer, tmp_path):
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(tiny_models("bert"))
    batch = pack_documents(tokenizer, sentences(40), 16)[:8]
    fixed = ListDataset(masked_held_out(tokenizer, batch, 0.3))
    settings = TrainSettings(steps=25, batch_size=8, learning_rate=1e-2, warmup_ratio=0.0, **QUIET)
    trainer = mlm_trainer(model, tokenizer, batch, fixed, mask=0.3, settings=settings, work_dir=tmp_path, save=False)
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert after < before - 0.5, (before, after)  # from ln(vocabulary) towards memorising the batch


class StopAt:
    """A Trainer callback that ends training after ``step`` steps (a run that was interrupted)."""

    def __new__(cls, step: int):
        from transformers import TrainerCallback

        class _Stop(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step >= step:
                    control.should_training_stop = True
                return control

        return _Stop()


def _weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


def test_resuming_from_a_checkpoint_continues_where_it_stopped(tiny_models, corpus, tmp_path):
    settings = TrainSettings(steps=6, batch_size=4, save_every=3, learning_rate=1e-3, **QUIET)
    whole = train_mlm(tiny_models("bert"), [corpus], tmp_path / "whole", max_len=16, settings=settings)
    work = tmp_path / "work"
    stopped = train_mlm(
        tiny_models("bert"),
        [corpus],
        tmp_path / "stopped",
        max_len=16,
        settings=settings,
        run_options=RunOptions(work_dir=work, keep_checkpoints=True, callbacks=[StopAt(3)]),
    )
    assert stopped.global_step == 3 and (work / "checkpoint-3").is_dir()
    resumed = train_mlm(
        tiny_models("bert"),
        [corpus],
        tmp_path / "resumed",
        max_len=16,
        settings=settings,
        run_options=RunOptions(work_dir=work, resume=True),
    )
    assert resumed.global_step == 6
    # the log carries over from the checkpoint; steps 4-6 match the run that was never interrupted
    assert [step for step, _ in resumed.history["train"]] == [1, 2, 3, 4, 5, 6]
    assert np.allclose(resumed.history["train"], whole.history["train"], atol=1e-4)
    expected, produced = _weights(whole.path), _weights(resumed.path)
    assert max(float(np.abs(expected[k] - produced[k]).max()) for k in expected) < 1e-5
    manifest = json.loads((resumed.path / "manifest.json").read_text())
    assert manifest["operations"][0]["parameters"]["resumed_from"].endswith("checkpoint-3")
    assert not work.exists()  # removed after the successful run (no --keep-checkpoints)


def test_output_loads_with_automodelformaskedlm_and_keeps_the_sentence_transformers_files(tmp_path, corpus):
    from transformers import AutoModel, AutoModelForMaskedLM

    from ctxext.guide import load_student

    source = tiny.make_sentence_transformer("mpnet", tmp_path / "st")
    settings = TrainSettings(steps=3, batch_size=4, **QUIET)
    result = train_mlm(source, [corpus], tmp_path / "out", max_len=16, settings=settings, eval_fraction=0.2)
    load_student(result.path, AutoModelForMaskedLM, ("mpnet.pooler.",))
    load_student(result.path, AutoModel, ("lm_head.",))  # the input's pooler was carried over
    assert (result.path / "modules.json").is_file() and (result.path / "1_Pooling" / "config.json").is_file()
    operation = result.manifest["operations"][0]
    assert operation["name"] == "mlm" and operation["parameters"]["global_step"] == 3
    assert sorted(operation["renamed"].values()) == ["mpnet.pooler.dense.bias", "mpnet.pooler.dense.weight"]
    assert any(name.startswith("lm_head.") for name in operation["parameters"]["newly_initialised"])
    assert operation["checks"][0]["name"] == "held_out_mlm_loss" and np.isfinite(operation["checks"][0]["value"])


def test_existing_output_and_missing_resume_checkpoints_are_refused_before_training(tiny_models, corpus, tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(OutputExists):
        train_mlm(tiny_models("bert"), [corpus], tmp_path / "out")
    with pytest.raises(SourceNotFound, match="no Trainer checkpoint"):
        train_mlm(tiny_models("bert"), [corpus], tmp_path / "new", run_options=RunOptions(resume=True))


def test_cli_mlm_trains_and_reports(tiny_models, corpus, tmp_path):
    out = tmp_path / "cli"
    outcome = runner.invoke(
        app,
        [
            "mlm",
            str(tiny_models("bert")),
            "--data",
            str(corpus),
            "--max-len",
            "16",
            "--steps",
            "2",
            "--batch-size",
            "4",
            "-o",
            str(out),
            "--json",
        ],
    )
    assert outcome.exit_code == 0, outcome.output
    summary = json.loads(outcome.stdout[outcome.stdout.index("{\n") :])
    assert summary["steps"] == 2 and (out / "manifest.json").is_file()
    outcome = runner.invoke(
        app, ["mlm", str(tiny_models("bert")), "--data", str(corpus), "--mask", "1.5", "-o", str(tmp_path / "bad")]
    )
    assert outcome.exit_code == 4 and "--mask" in outcome.output
