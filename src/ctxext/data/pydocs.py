"""Text every Python installation carries, read from the standard library's sources with ``ast`` (no download,
no import of the modules, so nothing runs). The one reader behind the corpus of module pages
(``ctxext data pydocs``), the docstrings that MLM and distillation demos train on, the needle task's haystack
and the local retrieval set (:func:`write_pydocs_beir`).

For the corpus, each module becomes one document whose title is ``module — first line of its docstring``
and whose sections are the rest of the module docstring ("Overview") and the docstring of each public class,
function and method, under a Markdown heading with its signature. Deterministic for one Python version (it
is in the manifest).
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import os
import sys
import sysconfig
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctxext.errors import InvalidArgument, SourceNotFound
from ctxext.io import atomic_output

if TYPE_CHECKING:
    from ctxext.data.output import PydocsResult

SKIPPED_PARTS = {
    "test",
    "tests",
    "idle_test",
    "idlelib",
    "turtledemo",
    "site-packages",
    "dist-packages",
    "__pycache__",
    "_bundled",
    "lib2to3",
    "ensurepip",
    "config-3",
}


STDLIB = "stdlib"
"""The name ``--packages`` gives the standard library."""


def stdlib_folder() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def package_folder(package: str) -> Path | None:
    """The source folder of an installed top-level package (found without importing it)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def package_version(package: str) -> str | None:
    for distribution in metadata.packages_distributions().get(package, []):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return None


def module_files(folder: Path | None = None) -> list[tuple[str, Path]]:
    """(dotted module name, source file) of the standard library's public pure-Python modules, sorted."""
    folder = folder or stdlib_folder()
    found = []
    for directory, subdirectories, files in os.walk(folder):
        subdirectories[:] = sorted(
            d for d in subdirectories if d not in SKIPPED_PARTS and not d.startswith(("config-", ".", "_"))
        )
        for file_name in files:
            if not file_name.endswith(".py"):
                continue
            path = Path(directory) / file_name
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if not parts or any(p.startswith("_") for p in parts) or parts[-1] == "__main__":
                continue
            found.append((".".join(parts), path))
    return sorted(found)


def parsed_modules(folder: Path | None = None, names: set[str] | None = None) -> Iterator[tuple[str, ast.Module]]:
    """(dotted name, syntax tree) of each module of ``module_files`` (only ``names`` when given) that parses."""
    for name, path in module_files(folder):
        if names is not None and name not in names:
            continue
        try:
            yield name, ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError, OSError):
            continue


def public_functions(folder: Path | None = None) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """(``module.function``, node) of every public function and method, in module order."""
    for module, tree in parsed_modules(folder):
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                yield f"{module}.{node.name}", node


def python_docstrings(min_chars: int = 200, package: str = STDLIB) -> list[tuple[str, str]]:
    """The docstrings of the standard library's (or an installed ``package``'s) modules, classes and functions
    (prose only, doctest sessions cut), as (qualified name, text) pairs in a fixed order: text for demos, tests
    and benchmarks without downloads. Depends on the Python (package) version; parsed once, then cached
    (ctxext's cache dir; a package without a version is parsed every time)."""
    from ctxext.presets import cache_dir

    folder = None if package == STDLIB else package_folder(package)
    if package != STDLIB and folder is None:
        raise SourceNotFound(f"package {package!r} is not installed (or is a single-file module)")
    version = sys.version.split()[0] if folder is None else package_version(package)
    key = version if folder is None else f"{package}-{version}"
    cached = cache_dir() / f"python-docstrings-v3-{key}-{min_chars}.json" if version else None
    if cached is not None and cached.is_file():
        try:
            return [tuple(pair) for pair in json.loads(cached.read_text(encoding="utf-8"))]
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError):
            pass
    pairs = _docstrings(folder, "" if folder is None else f"{package}.", min_chars)
    try:
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            temporary = cached.with_name(f".{cached.name}.{os.getpid()}")
            temporary.write_text(json.dumps(pairs), encoding="utf-8")
            temporary.replace(cached)
    except OSError:
        pass
    return pairs


def _docstrings(folder: Path | None, prefix: str, min_chars: int) -> list[tuple[str, str]]:
    documents: dict[str, str] = {}
    for module, tree in parsed_modules(folder):
        for node in [tree, *ast.walk(tree)]:
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            text = (ast.get_docstring(node) or "").split(">>>")[0]
            if len(text) >= min_chars:
                name = f"{prefix}{module}.{getattr(node, 'name', '')}".rstrip(".")
                documents.setdefault(name, " ".join(text.split()))
    return list(documents.items())


def module_document(name: str, tree: ast.Module) -> dict[str, Any] | None:
    """One module as a record: ``doc_id``, ``title``, ``sections`` and ``text`` (Markdown)."""
    docstring = ast.get_docstring(tree) or ""
    summary, _, rest = docstring.strip().partition("\n")
    title = f"{name} — {summary.strip()}" if summary.strip() else name
    sections: list[dict[str, str]] = []
    if rest.strip():
        sections.append({"heading": "Overview", "text": inspect.cleandoc(rest)})
    for node in tree.body:
        sections.extend(_definition_sections(node, prefix=""))
    if not sections:
        return None
    text = "\n\n".join(f"## {s['heading']}\n\n{s['text']}" for s in sections)
    return {"doc_id": name, "title": title, "sections": sections, "text": text, "source": "python-stdlib"}


def _definition_sections(node: ast.AST, prefix: str) -> list[dict[str, str]]:
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or node.name.startswith("_"):
        return []
    docstring = ast.get_docstring(node)
    found = []
    if isinstance(node, ast.ClassDef):
        heading = f"class {prefix}{node.name}"
    else:
        heading = f"{prefix}{node.name}({_arguments(node.args)})"
    if docstring and docstring.strip():
        found.append({"heading": heading, "text": docstring.strip()})
    if isinstance(node, ast.ClassDef):
        for child in node.body:
            found.extend(_definition_sections(child, prefix=f"{prefix}{node.name}."))
    return found


def _arguments(arguments: ast.arguments) -> str:
    names = [a.arg for a in (*arguments.posonlyargs, *arguments.args) if a.arg not in ("self", "cls")]
    if arguments.vararg:
        names.append(f"*{arguments.vararg.arg}")
    names.extend(a.arg for a in arguments.kwonlyargs)
    if arguments.kwarg:
        names.append(f"**{arguments.kwarg.arg}")
    return ", ".join(names)


HELD_OUT_PACKAGES = {
    "dev": ("sklearn", "numpy", "scipy", "accelerate", "huggingface_hub", "sentence_transformers", "rich", "requests"),
    "test": ("torch", "sympy", "networkx", "matplotlib", "jinja2", "click"),
}
"""The packages of the held-out retrieval sets (``data longdoc``): no training corpus reads them. All are
dependencies of ctxext (direct or through torch, transformers and sentence-transformers), so any install can
build both splits. ``transformers`` is left out: hundreds of its model pages repeat one docstring."""


def python_docs_documents(
    *, min_words: int = 300, limit: int | None = None, packages: Sequence[str] = (STDLIB,)
) -> Iterator[dict[str, Any]]:
    """Module pages with at least ``min_words`` words of documentation, package by package in name order:
    the standard library (``stdlib``) and installed packages (ids prefixed with the package)."""
    given = 0
    for package in packages:
        folder = None if package == STDLIB else package_folder(package)
        if package != STDLIB and folder is None:
            raise SourceNotFound(f"package {package!r} is not installed (or is a single-file module)")
        for name, tree in parsed_modules(folder):
            document = module_document(name if folder is None else f"{package}.{name}", tree)
            if document is None or len(document["text"].split()) < min_words:
                continue
            yield {**document, "source": "python-stdlib" if folder is None else package}
            given += 1
            if limit is not None and given >= limit:
                return


def check_training_packages(packages: Sequence[str]) -> None:
    """Refuse a training corpus that would read a held-out package."""
    held_out = {package for split in HELD_OUT_PACKAGES.values() for package in split}
    shared = sorted(set(packages) & held_out)
    if shared:
        raise InvalidArgument(
            f"{', '.join(shared)}: held out for evaluation (data longdoc); train on other packages, "
            "or pass --allow-held-out"
        )


def write_python_docs_corpus(
    out: str | Path,
    *,
    min_words: int = 300,
    limit: int | None = None,
    packages: Sequence[str] = (STDLIB,),
    allow_held_out: bool = False,
    force: bool = False,
    argv: list[str] | None = None,
) -> PydocsResult:
    """Write module pages as jsonl (one module per line) with a manifest beside it; packages held out for
    evaluation are refused unless ``allow_held_out``."""
    from ctxext.data.options import OutputFormat
    from ctxext.data.output import FileOutput, JsonlWriter, PydocsResult, output_format

    if not allow_held_out:
        check_training_packages(packages)
    out = Path(out).expanduser().absolute()
    output_format(out, (OutputFormat.jsonl,))
    output = FileOutput(out, force=force)
    with output.writing(JsonlWriter) as writer:
        per_source: dict[str, dict[str, int]] = {}
        for document in python_docs_documents(min_words=min_words, limit=limit, packages=packages):
            writer.write([document])
            counts = per_source.setdefault(document["source"], {"documents": 0, "words": 0})
            counts["documents"] += 1
            counts["words"] += len(document["text"].split())
        output.finish(
            writer,
            empty=f"no module of {', '.join(packages)} has {min_words}+ words of docs",
            command="data pydocs",
            options={"min_words": min_words, "limit": limit, "packages": list(packages)},
            inputs=[],
            counts={
                "documents": writer.rows,
                "words": sum(c["words"] for c in per_source.values()),
                "sources": per_source,
            },
            problems=[],
            argv=argv,
            extra={
                "python": {"version": sys.version.split()[0], "stdlib": str(stdlib_folder())},
                "packages": {p: package_version(p) for p in packages if p != STDLIB},
            },
        )
    return PydocsResult(out, output.manifest)


# ----------------------------------------------------------------------------- a local retrieval set


def write_pydocs_beir(
    out: str | Path, *, limit: int = 300, min_words: int = 5, packages: Sequence[str] = (), force: bool = False
) -> Path:
    """A BEIR-format retrieval set from the standard library (or the installed ``packages``): query = the
    summary line of a public function's docstring, document = that function's source with the docstring
    removed (``ast.unparse``), one relevant document per query. Functions are taken in module order, every
    k-th, to ``limit``; duplicate summary lines and bodies are skipped. Deterministic for one Python version
    (and package versions)."""
    candidates: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    folders = [package_folder(package) for package in packages] if packages else [None]
    functions = (found for folder in folders if folder or not packages for found in public_functions(folder))
    for name, node in functions:
        docstring = ast.get_docstring(node)
        if not docstring:
            continue
        summary = " ".join(docstring.strip().split("\n\n")[0].split())
        if len(summary.split()) < min_words or summary in seen:
            continue
        node.body = node.body[1:] or [ast.Pass()]
        body = ast.unparse(node)
        if len(body.split()) < 10:
            continue
        seen.add(summary)
        candidates.append((name, summary, body))
    if not candidates:
        raise SourceNotFound(f"no documented public function found in {', '.join(packages) or 'the standard library'}")
    step = max(1, len(candidates) // limit)
    chosen = candidates[::step][:limit]
    with atomic_output(out, force=force) as staging:
        with (
            open(staging / "corpus.jsonl", "w", encoding="utf-8") as corpus,
            open(staging / "queries.jsonl", "w", encoding="utf-8") as queries,
        ):
            for index, (name, summary, body) in enumerate(chosen):
                corpus.write(json.dumps({"_id": f"d{index}", "title": "", "text": body}) + "\n")
                queries.write(json.dumps({"_id": f"q{index}", "text": summary, "function": name}) + "\n")
        (staging / "qrels").mkdir()
        (staging / "qrels" / "test.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(len(chosen)))
        )
    return Path(out).expanduser().absolute()
