"""Hostile ``--revision`` values, in the catalogue's form (tests/test_bad_inputs.py): a revision is a git ref
name for a hub source, never a path, and never silently dropped."""

from __future__ import annotations

import pytest

from test_bad_inputs import EXISTS, INVALID, NOT_FOUND, Case, O, Scene, T, case, check_case, prompts, scene  # noqa: F401
from test_revision import HUB_ID, make_hub_cache, use_offline_cache

NOT_CACHED = "ctxext-tests/not-cached"
# values that name a place on disk, or that git refuses as a ref name
PATH_LIKE = ["../../x", "/etc", "a/../../b", "..", "", "with space", "bell\a", "x.lock"]
PATH_LIKE += ["main@{1}", "main~1", "main^", "a:b", "what?", "a*", "a[0]", "back\\slash"]


@pytest.fixture(autouse=True)
def offline_cache(tmp_path, monkeypatch):
    """An empty offline Hugging Face cache beside the working folder (filled by :func:`cached`)."""
    use_offline_cache(tmp_path / "hub", monkeypatch)


def cached(s: Scene) -> str:
    """The tiny model of tests/test_revision.py in the offline cache, at tag ``v1`` only."""
    make_hub_cache(s.root.parent / "hub")
    return HUB_ID


REVISION_CASES: list[Case] = [
    case("interpolate: --revision with a local folder", INVALID, "/src' is a local folder")(
        lambda s: ["interpolate", s.model(), "--len", 96, "--revision", "v1", *O]
    ),
    case("inspect: --revision with a local folder", INVALID, "/src' is a local folder")(
        lambda s: ["inspect", s.model(), "--revision", "main"]
    ),
    case("embed: --revision with a local folder", INVALID, "is a local folder")(
        lambda s: ["embed", s.model(), s.text_records(), "--revision", "v1", "-o", "e.npy"]
    ),
    case("evaluate: --revision with a local folder", INVALID, "is a local folder")(
        lambda s: ["evaluate", s.model(), "--lengths", "64", "--revision", "v1"]
    ),
    case("distill: --teacher-revision with a local teacher", INVALID, "/t' is a local folder")(
        lambda s: [
            *["distill", s.model(), "--teacher", s.model(name="t"), "--data", s.text_records()],
            *["--teacher-revision", "v1", "--max-len", 32, *O],
        ]
    ),
    case("data corpus: --revision with the embedded tokenizer", INVALID, "'all-MiniLM-L6-v2' is an embedded model")(
        lambda s: ["data", "corpus", s.text_records(), "--revision", "v1", "-o", "c.parquet"]
    ),
    case("interpolate: empty --revision", INVALID, "revision ''", "empty")(
        lambda s: ["interpolate", NOT_CACHED, "--len", 96, "--revision", "", *O]
    ),
    case("interpolate: empty --revision with a local folder", INVALID, "revision ''")(
        lambda s: ["interpolate", s.model(), "--len", 96, "--revision", "", *O]
    ),
    *[
        case(f"interpolate: --revision {value!r}", INVALID, repr(value), "not a branch, tag or commit name")(
            lambda s, value=value: ["interpolate", cached(s), "--len", 96, "--revision", value, *O]
        )
        for value in PATH_LIKE
    ],
    case("inspect: a revision the offline cache lacks", NOT_FOUND, "no revision 'v9' in the Hugging Face cache")(
        lambda s: ["inspect", cached(s), "--revision", "v9"]
    ),
    case("interpolate: a revision the offline cache lacks", NOT_FOUND, f"{HUB_ID!r} has no revision 'v2'")(
        lambda s: ["interpolate", cached(s), "--len", 96, "--revision", "v2", *O]
    ),
    case("inspect: a revision of a model not in the cache", NOT_FOUND, "not in the Hugging Face cache")(
        lambda s: ["inspect", NOT_CACHED, "--revision", "v1"]
    ),
]


@pytest.mark.parametrize("bad", REVISION_CASES, ids=[c.name for c in REVISION_CASES])
def test_revision_bad_input(bad, scene, prompts):  # noqa: F811 - the catalogue's fixtures
    check_case(bad, scene, prompts)


def test_the_revision_cases_have_distinct_names():
    assert len({c.name for c in REVISION_CASES}) == len(REVISION_CASES) >= 8
