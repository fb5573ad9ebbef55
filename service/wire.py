"""What the API's answers are made of that the server and its clients both need, and no code
of either: the blendshape names and the entry of an image that failed. A client imports this,
never the server's pipeline, to read an answer."""

from __future__ import annotations

from typing import Any

# kBlendshapeNames in MediaPipe's face_blendshapes_graph.cc: the blendshapes model's 52 outputs
# in order ("_neutral" is unused).
BLENDSHAPE_NAMES = (
    "_neutral",
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight",
    "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight",
    "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight",
    "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight",
    "eyeWideLeft", "eyeWideRight",
    "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight",
)


def failed_image_entry(index: int, code: str, message: str) -> dict[str, Any]:
    """The entry of an image that failed (``schemas.ImageOut``): its error, nothing else."""
    return {"index": index, "width": None, "height": None, "camera": None, "faces": [],
            "quality": None, "min_face_px": None, "dropped_boxes": [],
            "error": {"code": code, "message": message}}
