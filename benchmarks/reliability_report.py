"""Counts behind docs/reliability.md's tables, from one run of the reliability tests.

The reliability tests (``tests/test_bad_inputs.py``, ``tests/test_reliability.py``,
``tests/test_security.py``) record how much they tried -- generated inputs, kills,
processes, rows compared -- through ``tests._kill_worker.report`` when
``XLMT_RELIABILITY_REPORT`` names a folder. This script runs them with it set and
prints the records as a Markdown table, to update the docs from.

Usage::

    python benchmarks/reliability_report.py              # the three modules
    python benchmarks/reliability_report.py tests/test_bad_inputs.py

Exits with pytest's status when the tests fail (a report from a failing run is
not printed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULES = ["tests/test_bad_inputs.py", "tests/test_reliability.py", "tests/test_security.py"]


def run(modules: list[str]) -> tuple[int, list[dict]]:
    """Run ``modules`` under pytest with the report folder set; return (status, records)."""
    with tempfile.TemporaryDirectory(prefix="xlmt-reliability-") as folder:
        env = {**os.environ, "XLMT_RELIABILITY_REPORT": folder}
        status = subprocess.call(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *modules],
            cwd=REPO,
            env=env,
        )
        path = Path(folder) / "reliability.jsonl"
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return status, [json.loads(line) for line in lines if line.strip()]


def to_markdown(records: list[dict]) -> str:
    """One row per record: its name and its numbers."""
    rows = ["| Record | Numbers |", "|---|---|"]
    for rec in records:
        name = rec.get("name", "?")
        numbers = ", ".join(f"{k}={v}" for k, v in rec.items() if k != "name")
        rows.append(f"| `{name}` | {numbers} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", default=MODULES, help="test modules to run")
    args = parser.parse_args(argv)
    status, records = run(args.modules)
    if status != 0:
        print(f"pytest exited {status}: no report", file=sys.stderr)
        return status
    print(to_markdown(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
