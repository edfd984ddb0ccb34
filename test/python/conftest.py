"""Fixtures of the Python tests (pytest from scripts/run_tests.sh, in build/venv).

The package is the one `make build` assembled in BUILD/python; mirasc is BUILD/bin/mirasc
and compiled modules are cached in BUILD/test-cache/python (kept between runs: a cache
hit is the same module, the key covers the source, the options and the compiler)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("MIRAS_BUILD", ROOT / "build")).resolve()
EXAMPLES = ROOT / "examples"
os.environ.setdefault("MIRAS_MIRASC", str(BUILD / "bin" / "mirasc"))
os.environ.setdefault("MIRAS_CACHE_DIR", str(BUILD / "test-cache" / "python"))


def example_names():
    return sorted(p.stem for p in EXAMPLES.glob("*.miras"))


@pytest.fixture(scope="session")
def examples_dir():
    return EXAMPLES
