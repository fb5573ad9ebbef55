"""scripts/anatomy.py's accounting: a part's CPU leaves out the parts it calls, and the rows of a
run in process add up to the threads' CPU."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))

import anatomy


def spin(seconds: float) -> None:
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


def test_a_part_leaves_out_the_parts_it_calls() -> None:
    timers = anatomy.Timers()
    inner = timers.wrap("inner", lambda: spin(0.05))

    def outer() -> None:
        spin(0.03)
        inner()

    timers.wrap("outer", outer)()
    assert 0.045 <= timers.seconds["inner"] < 0.07
    assert 0.025 <= timers.seconds["outer"] < 0.045


def test_the_rows_in_process_add_up_to_the_threads_cpu() -> None:
    """In a process of its own: the timers stay installed for the rest of the process."""
    code = """
import json, sys
sys.path.insert(0, "scripts")
import anatomy
from tests.images import astronaut, encode
before = anatomy.thread_cpu()
rows = anatomy.in_process([encode(astronaut())] * 4)
after = anatomy.thread_cpu()
print(json.dumps({"rows": rows, "spent_ms": 1000 * (sum(after.values()) - sum(before.values()))}))
"""
    ran = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=300, check=True)
    answer = json.loads(ran.stdout.splitlines()[-1])
    rows = answer["rows"]
    # The decode, detector, crops, models and PnP ran and were counted.
    for part in ("image decode", "letterbox and tiles (resize)", "crops (and points back)",
                 "model inference (embedded)", "PnP", "JSON"):
        assert rows[part] > 0, part
    # The rows are CPU the threads spent on the 4 photos measured: not more than the whole
    # run's (which adds loading the models and the warm-up).
    assert 0 < 4 * sum(rows.values()) <= answer["spent_ms"] + 50
