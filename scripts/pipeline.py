"""Kept for older instructions: `python scripts/pipeline.py CONFIG --work DIR` is `ctxext pipeline CONFIG --work DIR`
(see ctxext/pipeline.py)."""

import sys

from ctxext.cli import app

if __name__ == "__main__":
    app(["pipeline", *sys.argv[1:]], prog_name="ctxext")
