"""End-to-end accuracy on ../shared/data/aflw2000-dev, which only developers' machines have."""

from __future__ import annotations

import httpx
import pytest

from scripts.eval_aflw2000 import evaluate
from tests.conftest import SHARED_DATA

AFLW_DEV = SHARED_DATA / "aflw2000-dev"

pytestmark = pytest.mark.skipif(not (AFLW_DEV / "labels.npz").exists(),
                                reason=f"{AFLW_DEV} is not on this machine")


# Per preset: detect-mode coverage at least, MAE and NME68 at most; boxes-mode MAE at most.
# On 98 faces an MAE's standard error is about 0.5 degree: these catch breakage, not tenths.
GUARDS = {"balanced": (0.93, 4.3, 0.05, 5.9), "accurate": (0.95, 4.3, 0.05, 5.6)}


@pytest.mark.parametrize("quality", sorted(GUARDS))
def test_detect_mode_guards_coverage_and_error(client: httpx.Client, quality: str) -> None:
    coverage, mae, nme, _ = GUARDS[quality]
    result = evaluate(client, AFLW_DEV, "detect", quality)
    assert result["coverage"] >= coverage
    assert result["mae_mean"] <= mae
    assert result["nme_68"] <= nme


@pytest.mark.parametrize("quality", sorted(GUARDS))
def test_boxes_mode_guards_error(client: httpx.Client, quality: str) -> None:
    result = evaluate(client, AFLW_DEV, "boxes", quality)
    assert result["coverage"] == 1.0
    assert result["mae_mean"] <= GUARDS[quality][3]
