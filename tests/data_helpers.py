"""Small files the data tests write for themselves: texts on distinct topics, PDFs, jsonl and Parquet."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

TOPICS = {
    "astronomy": "star galaxy telescope orbit planet comet nebula light year solar eclipse moon crater "
    "astronomer cosmic radiation spectrum supernova",
    "cooking": "recipe oven flour butter garlic onion simmer roast kitchen sauce pepper salt bake dough "
    "chef spice tomato",
    "football": "goal striker referee penalty stadium league match keeper midfield coach tackle season "
    "trophy fans pitch corner",
    "geology": "rock mineral sediment volcano magma fault quartz erosion basalt granite crust mantle "
    "fossil strata tectonic glacier",
}
FILLER = "the a of and in with for on is was this that by from".split()


def sentence(topic: str, rng: random.Random, words: int = 12) -> str:
    vocabulary = TOPICS[topic].split()
    picked = [rng.choice(vocabulary) if rng.random() < 0.6 else rng.choice(FILLER) for _ in range(words)]
    return " ".join(picked).capitalize() + "."


def paragraph(topic: str, rng: random.Random, sentences: int = 5) -> str:
    return " ".join(sentence(topic, rng) for _ in range(sentences))


def long_text(topic: str = "astronomy", paragraphs: int = 8, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "\n\n".join(paragraph(topic, rng) for _ in range(paragraphs)) + "\n"


def structured_record(topic: str, index: int, seed: int) -> dict[str, Any]:
    """A long document with a title and Markdown sections, on one topic."""
    rng = random.Random(seed)
    sections = [f"## Part {n} on {topic}\n\n{paragraph(topic, rng, 4)}" for n in range(1, 4)]
    return {
        "doc_id": f"{topic}-{index}",
        "title": f"Study {index} of {topic} matters",
        "text": f"{paragraph(topic, rng, 3)}\n\n" + "\n\n".join(sections),
    }


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def write_parquet(path: Path, records: list[dict[str, Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(records), path)
    return path


def write_pdf(path: Path, text: str, *, user_password: str | None = None, title: str | None = None) -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    if title:
        pdf.set_title(title)
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    pdf.multi_cell(0, 6, text)
    if user_password:
        pdf.set_encryption(owner_password="owner-" + user_password, user_password=user_password)
    pdf.output(str(path))
    return path
