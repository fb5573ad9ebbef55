"""The presets a client picks with ``quality``: which stages run, with which parameters.

Both ``balanced`` and ``accurate`` search for faces down to 48 px, in tiles where a pass over
the whole image does not see them; in an image of 768 px or less only where that pass found no
portrait (one sure, large face; ``stages.face_search``). On scripts/eval_recall.py's
canvases of 640x480 to 1280x720, 48 px faces went from 50% to 86% found and 64 px from 75% to
95%, with no false faces added. On the large dev set the false faces went from 13 to 12
(accurate: 15, as before), with its photos' p50 unchanged (the search runs on 7% of them).
Searching 48 px in every 450 px photo, tried before, returned 7 more false faces there (22
against 15).

What each stage costs and buys is measured by ``scripts/ablate.py`` (``make ablate``) on the
large AFLW2000-3D dev set; the README's table is its output. ``accurate`` is the full pipeline.
"""

from __future__ import annotations

from service.config import Quality
from service.pipeline.mesh import MESH_V1, MESH_V2
from service.pipeline.records import FullRange, MirrorFrom, Preset
from service.pipeline.stages import fit, locate, mirror, search_lost, sharpen, solve

# FaceMesh V2 fits every face in ``balanced`` and ``accurate``: on the large dev set it cut the
# MAE on the faces the FaceLandmarker also finds from 3.41 (V1) to 3.11 (3.28 the
# FaceLandmarker's own). The keypoints' pose applies to V1's fits only (stages.keypoint_use). The
# lost-face search runs V1: V2 refinds fewer of the profiles it loses (coverage 94.2% against
# 96.4%) at three times the cost a crop. ``fast`` keeps V1 alone, the cheapest fit.
#
# ``balanced`` mirrors the profiles (over 55 degrees of yaw, or lost) from their landmarks: 0.15
# more mesh crops an image, under a millisecond, and the 60-99 degree band's MAE on the faces
# the FaceLandmarker also finds 8.82 -> 8.29 (its own 8.74); from 35 degrees it cost 5 ms and
# bought 0.14 more in the 30-60 band. ``accurate`` has no second mesh pass: with V2 it bought
# 0.05 degree on those faces, cost 0.06 in boxes mode and 9 ms an image.
ACCURATE = Preset(Quality.ACCURATE.value,
                  (locate, sharpen, fit, search_lost, solve, mirror), min_face_px=48,
                  mesh_model=MESH_V2, search_model=MESH_V1)
BALANCED = Preset(Quality.BALANCED.value, (locate, sharpen, fit, search_lost, solve, mirror),
                  full_range=FullRange.WHERE_NO_LARGE_FACE, min_face_px=48,
                  mesh_model=MESH_V2, search_model=MESH_V1,
                  mirror_from=MirrorFrom.LANDMARKS, mirror_above_yaw_deg=55.0)
FAST = Preset(Quality.FAST.value, (locate, sharpen, fit, solve),
              full_range=FullRange.WHERE_NO_LARGE_FACE)

PRESETS: dict[Quality, Preset] = {Quality.FAST: FAST, Quality.BALANCED: BALANCED,
                                  Quality.ACCURATE: ACCURATE}
