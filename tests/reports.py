"""Reading ``cartoonize-batch --report``: JSON lines, one per failure, the summary last."""

import json
from pathlib import Path


def read_report(path: Path) -> dict:
    """The summary, with the failures before it as ``failures``; fails unless the summary is last."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    *failures, last = lines
    assert set(last) == {"summary"}, last
    assert all(set(failure) == {"input", "status", "error"} for failure in failures), failures
    return {**last["summary"], "failures": failures}
