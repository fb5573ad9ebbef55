"""The presets a client picks with ``quality``: which stages run, with which parameters.

What each stage costs and buys is measured by ``scripts/ablate.py`` (``make ablate``) on the
large AFLW2000-3D dev set; the README's table is its output. ``accurate`` is the full pipeline.
"""

from __future__ import annotations

from service.pipeline.records import FullRange, Preset, Quality
from service.pipeline.stages import fit, locate, mirror, refit, search_lost, sharpen, solve

ACCURATE = Preset(Quality.ACCURATE.value,
                  (locate, sharpen, fit, refit, search_lost, solve, mirror))
BALANCED = Preset(Quality.BALANCED.value, (locate, sharpen, fit, search_lost, solve),
                  full_range=FullRange.WHERE_NO_LARGE_FACE)
FAST = Preset(Quality.FAST.value, (locate, sharpen, fit, solve),
              full_range=FullRange.WHERE_NO_LARGE_FACE)

PRESETS: dict[Quality, Preset] = {Quality.FAST: FAST, Quality.BALANCED: BALANCED,
                                  Quality.ACCURATE: ACCURATE}
