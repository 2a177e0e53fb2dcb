"""The suite's own scheduling: under ``-n 2 --dist loadfile`` (.ci/run) the long files start first.

pytest-xdist 3.8 sorts the files by their number of tests before it hands them out unless it is
told not to, which had put the SLURM file (one of the two longest, with two tests) last: it ran
alone at the end of the suite. ``tests/conftest.py::pytest_configure`` turns that off; this test
runs pytest on a small made-up suite with the project's two hooks to show the order holds.
"""
from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import PROJECT_ROOT


def test_long_files_are_handed_out_first(tmp_path):
    import xdist  # noqa: F401  (the suite's own dependency, pyproject `test` extra: .ci/run needs it)
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text(
        "from tests.conftest import pytest_collection_modifyitems, pytest_configure\n")
    # test_slurm.py is LONG_FILES[0]: one test, where four files with six tests each come first by count
    (suite / "test_slurm.py").write_text("def test_first():\n    pass\n")
    for name in "abcd":
        (suite / f"test_{name}.py").write_text("".join(
            f"def test_{i}():\n    import time\n    time.sleep(0.2)\n\n" for i in range(6)))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(suite), "-n", "2", "--dist", "loadfile", "-v",
         "-p", "no:cacheprovider"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    done = [line.split()[-1] for line in proc.stdout.splitlines() if line.startswith("[gw") and "PASSED" in line]
    assert len(done) == 25, proc.stdout[-3000:]
    # handed out first, it finishes among the first tests; sorted by count it is handed out last
    # (measured: among the first two with the hook, 25th of 25 without it)
    assert done.index("suite/test_slurm.py::test_first") < 6, done
