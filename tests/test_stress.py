"""The stress suite's CI version: `python -m tests.stress --quick` in a subprocess, every row a pass (or a skip).

About 3 minutes on 2 busy cores: three lanes of cases at once, 3 sessions x 3 reruns instead of 30 x 15, a 5 s pause
of the trainer instead of 35 s, 4 simultaneous starts instead of 8. `python -m tests.stress` is the full run.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_quick_stress_suite_has_no_miss(cifar_dir, tmp_path):
    report = tmp_path / "stress.md"
    env = {key: value for key, value in os.environ.items() if key not in ("LENET_TEACHER_PIN", "LENET_RUNS", "LENET_CHECKPOINT")}
    out = subprocess.run([sys.executable, "-m", "tests.stress", "--quick", "--data", str(cifar_dir), "--markdown", str(report)],
                         cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    table = report.read_text() if report.exists() else out.stdout[-6000:]
    assert out.returncode == 0, f"{table}\n{out.stderr[-4000:]}"
    assert "| **miss** |" not in table and " 0 miss" in table, table
