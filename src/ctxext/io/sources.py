"""Where a checkpoint comes from: a local folder, a hub ID at a revision, or an embedded model name."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctxext.errors import InvalidArgument, SourceNotFound
from ctxext.io.folder import STALE_EXPORT_DIRS, ModelFolder
from ctxext.io.locks import register_input

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# What a git ref name may not hold anywhere (git check-ref-format): control characters and space, ~ ^ : ? * [ \,
# "..", "@{".
REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{")


@dataclass(frozen=True)
class Source:
    """Where a checkpoint came from: the reference the user gave and the local folder it resolved to."""

    ref: str
    path: Path
    hub_id: str | None = None
    revision: str | None = None
    commit: str | None = None
    """The hub commit the files came from (a download's snapshot), whatever ``revision`` named."""

    def describe(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "path": str(self.path),
            "hub_id": self.hub_id,
            "revision": self.revision,
            "commit": self.commit,
        }


def resolve_source(
    ref: str | os.PathLike[str],
    *,
    revision: str | None = None,
    allow_patterns: list[str] | None = None,
    ignore_patterns: list[str] | None = None,
    what: str = "model",
) -> Source:
    """Turn a local folder or a hub ID into a local folder. Hub downloads honour HF_HUB_OFFLINE."""
    text = os.fspath(ref)
    if revision is not None:
        check_revision(revision)
    if not text.strip():
        raise SourceNotFound(f"the {what} is an empty string; name a folder, a hub ID or an embedded model")
    local = Path(text).expanduser()
    if local.is_symlink() and not local.exists():
        raise SourceNotFound(f"{what} {text!r} is a broken symbolic link or a link loop")
    if local.exists():
        if not local.is_dir():
            raise SourceNotFound(f"{what} {text!r} is a file; give the folder that holds it")
        if revision is not None:
            raise InvalidArgument(f"a revision applies to hub sources only; {what} {text!r} is a local folder")
        register_input(local)
        return Source(ref=text, path=local.resolve())
    if not HUB_ID.match(text) or text.startswith((".", "/", "~")):
        raise SourceNotFound(f"{what} folder {text!r} does not exist")
    from ctxext.presets import EMBEDDED, EMBEDDED_HUB_IDS, embedded_model

    if revision is not None and text in EMBEDDED:
        raise InvalidArgument(
            f"a revision applies to hub sources only; {what} {text!r} is an embedded model "
            f"(name its hub ID {EMBEDDED_HUB_IDS[text]!r} to read a revision)"
        )
    embedded = embedded_model(text)
    if embedded is not None:
        return Source(ref=text, path=embedded, hub_id=EMBEDDED_HUB_IDS[text])
    return _download_from_hub(text, revision, allow_patterns, ignore_patterns, what)


def _download_from_hub(
    hub_id: str, revision: str | None, allow_patterns: list[str] | None, ignore_patterns: list[str] | None, what: str
) -> Source:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    ignore = list(ignore_patterns or []) + [f"{d}/*" for d in STALE_EXPORT_DIRS] + ["*.h5", "*.msgpack", "*.ot"]
    try:
        path = snapshot_download(hub_id, revision=revision, allow_patterns=allow_patterns, ignore_patterns=ignore)
    except RepositoryNotFoundError:
        raise SourceNotFound(f"{what} {hub_id!r} is neither a local folder nor a model on the hub") from None
    except RevisionNotFoundError:
        raise SourceNotFound(f"{what} {hub_id!r} has no revision {revision!r} on the hub") from None
    except GatedRepoError:
        raise SourceNotFound(f"{what} {hub_id!r} is gated: log in with `hf auth login` and accept its terms") from None
    except LocalEntryNotFoundError:
        hint = "HF_HUB_OFFLINE is set" if offline else "the hub could not be reached"
        if _in_hub_cache(hub_id):
            raise SourceNotFound(
                f"{what} {hub_id!r} has no revision {revision or 'main'!r} in the Hugging Face cache, and {hint}; "
                "download that revision once online or name one the cache holds"
            ) from None
        raise SourceNotFound(
            f"{what} {hub_id!r} is not a local folder and not in the Hugging Face cache, and {hint}; "
            "download it once online or pass a local folder"
        ) from None
    except OSError as error:  # network failures surface as OSError subclasses (requests/httpx)
        raise SourceNotFound(f"{what} {hub_id!r} could not be fetched from the hub: {error}") from None
    commit = Path(path).name if Path(path).parent.name == "snapshots" else None
    return Source(ref=hub_id, path=Path(path), hub_id=hub_id, revision=revision, commit=commit)


def _in_hub_cache(hub_id: str) -> bool:
    """Whether the Hugging Face cache holds some snapshot of the model ``hub_id`` (whatever its revisions)."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    return (Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=hub_id, repo_type="model") / "snapshots").is_dir()


def names_hub_model(ref: str | os.PathLike[str]) -> bool:
    """Whether ``ref`` names a model on the hub (which has revisions), not a local folder or an embedded name."""
    from ctxext.presets import EMBEDDED_HUB_IDS

    text = os.fspath(ref)
    return not Path(text).expanduser().exists() and text not in EMBEDDED_HUB_IDS and bool(HUB_ID.match(text))


# ----------------------------------------------------------------------------- revisions


def revision_problem(revision: str) -> str | None:
    """Why ``revision`` is not a git ref name (a branch, a tag such as ``v1``, ``refs/pr/1``, a commit hash), by
    the rules of ``git check-ref-format --allow-onelevel``; None when it is one. Such a name is never a path."""
    if revision in ("", "@"):
        return "it is empty" if not revision else "'@' alone is not a ref name"
    forbidden = REF_FORBIDDEN.search(revision)
    if forbidden:
        return f"it holds {forbidden.group()!r}"
    if revision.endswith("."):
        return "it ends with '.'"
    for part in revision.split("/"):
        if not part:
            return "it starts or ends with '/', or holds '//'"
        if part.startswith("."):
            return f"its part {part!r} starts with '.'"
        if part.endswith(".lock"):
            return f"its part {part!r} ends with '.lock'"
    return None


def check_revision(revision: str) -> str:
    """``revision`` when it is a git ref name (see :func:`revision_problem`); otherwise InvalidArgument."""
    problem = revision_problem(revision)
    if problem:
        raise InvalidArgument(f"revision {revision!r} is not a branch, tag or commit name: {problem}")
    return revision


# ----------------------------------------------------------------------------- opening a model


def open_model(ref: str | os.PathLike[str], *, revision: str | None = None) -> tuple[Source, ModelFolder]:
    source = resolve_source(ref, revision=revision)
    return source, ModelFolder.open(source.path)
