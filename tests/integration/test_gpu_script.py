"""benchmarks/gpu.sh --dry-run: the GPU script's every step, end to end on this CPU with tiny sizes.

The script runs unattended on a lent GPU machine, where a broken step would cost the lease;
here each step runs for real (the UNet sweep, configs/gpu.yaml deployed at each
Cartoonizer share with a logical GPU, a clip through the jobs API) and the table must hold
a figure in every row. About 3 minutes on a quiet 2-core machine: four Serve graphs start,
each step under the hard time limit sized for a GPU, so a loaded CPU can run a step out of
time. Opt-in for that reason: CARTOON_GPU_DRY_RUN=1 python -m pytest tests/integration/test_gpu_script.py.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(os.environ.get("CARTOON_GPU_DRY_RUN") != "1", reason="opt-in: set CARTOON_GPU_DRY_RUN=1")
def test_the_gpu_script_dry_run_fills_every_row_of_its_table(tmp_path):
    environment = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["bash", "benchmarks/gpu.sh", "--dry-run", str(tmp_path)], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=1500)
    table = done.stdout
    assert done.returncode == 0, (table[-3000:], done.stderr[-3000:])
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| measure")]
    measures = " ".join(rows)
    for expected in ("head crops/s", "tiles/s", "num_gpus 1 ", "num_gpus 0.5 ", "num_gpus 0.25 ",
                     "c=1 latency", "c=2 images/s", "frames/s, jobs API"):
        assert expected in measures, (expected, table)
    assert not [row for row in rows if "| n/a |" in row], table
    answered = re.findall(r"(\d+)/(\d+) ok", measures)  # every request of the loaded levels answered
    assert len(answered) == 3 and all(ok == sent for ok, sent in answered), table
