"""End-to-end accuracy on ../shared/data/aflw2000-dev, which only developers' machines have."""

from __future__ import annotations

import httpx
import pytest

from scripts.eval_aflw2000 import evaluate
from tests.conftest import SHARED_DATA

AFLW_DEV = SHARED_DATA / "aflw2000-dev"

pytestmark = pytest.mark.skipif(not (AFLW_DEV / "labels.npz").exists(),
                                reason=f"{AFLW_DEV} is not on this machine")


def test_detect_mode_guards_coverage_and_error(client: httpx.Client) -> None:
    result = evaluate(client, AFLW_DEV, "detect")
    assert result["coverage"] >= 0.93
    assert result["mae_mean"] <= 4.3
    assert result["nme_68"] <= 0.05


def test_boxes_mode_guards_error(client: httpx.Client) -> None:
    result = evaluate(client, AFLW_DEV, "boxes")
    assert result["coverage"] == 1.0
    assert result["mae_mean"] <= 5.6
