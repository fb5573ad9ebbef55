"""The evaluation and benchmark scripts on a machine without the labelled photos: a message that
says what they need and where it comes from, exit status 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.parametrize("command", [
    ["scripts/eval_aflw2000.py", "{missing}"],
    ["scripts/ablate.py", "{missing}", "--boxes"],
    ["scripts/eval_recall.py", "{missing}"],
    ["scripts/eval_blendshapes.py", "{missing}"],
    ["scripts/peer_poses.py", "{missing}"],
    ["scripts/fit_pose_calibration.py", "collect", "{missing}", "--out", "{missing}/x.npz"],
    ["scripts/anatomy.py", "--photos", "{missing}"],
])
def test_a_script_without_its_data_says_what_it_needs(command: list[str],
                                                      tmp_path: Path) -> None:
    missing = str(tmp_path / "aflw2000-dev-large")
    ran = subprocess.run([sys.executable, *(part.format(missing=missing) for part in command)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 2, ran.stderr
    assert "Traceback" not in ran.stderr
    assert f"{missing} does not exist" in ran.stderr
    assert "labels.npz" in ran.stderr and "AFLW2000-3D" in ran.stderr


def test_the_bench_without_photos_says_which_rows_it_leaves_out() -> None:
    """Only the message: the bench itself is minutes long."""
    sys.path.insert(0, str(REPO / "scripts"))
    from eval_data import missing_data_message

    message = missing_data_message("bench", REPO / "no-such-photos", labels=False)
    assert message is not None and "no-such-photos does not exist" in message
    assert missing_data_message("bench", REPO / "tests", labels=False) is not None
