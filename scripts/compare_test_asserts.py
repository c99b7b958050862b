"""Are the tests' assertions unchanged between two commits? For every test function present at both, compare
the AST of its ``assert`` statements (layout, comments and line numbers do not count).

  python scripts/compare_test_asserts.py 21d2327 6cb48ad
"""

from __future__ import annotations

import ast
import subprocess
import sys


def test_asserts(revision: str) -> dict[str, list[str]]:
    """Test function name -> the dumped AST of each assert in it, over every tests/*.py at ``revision``."""
    listed = subprocess.run(["git", "ls-tree", "-r", "--name-only", revision, "tests"], capture_output=True, text=True)
    asserts: dict[str, list[str]] = {}
    for path in (name for name in listed.stdout.split() if name.endswith(".py")):
        source = subprocess.run(["git", "show", f"{revision}:{path}"], capture_output=True, text=True).stdout
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
                found = [ast.dump(n, include_attributes=False) for n in ast.walk(node) if isinstance(n, ast.Assert)]
                asserts[f"{path}::{node.name}"] = found
    return asserts


def main() -> None:
    before, after = (test_asserts(revision) for revision in sys.argv[1:3])
    changed = [name for name in before if name in after and before[name] != after[name]]
    gone = [name for name in before if name not in after]
    print(f"{len(before)} tests before: {len(before) - len(changed) - len(gone)} with the same asserts")
    for name in changed:
        print("changed:", name)
    for name in gone:
        print("gone or moved:", name)


if __name__ == "__main__":
    main()
