"""Rebuild docs/benchmarks.md from benchmarks/results/*.md, without measuring anything.

Usage::

    python benchmarks/assemble_docs.py
"""

from __future__ import annotations

import _common as C

if __name__ == "__main__":
    print(f"wrote {C.assemble_docs()}")
