"""What a client may ask of a request, declared once for every transport.

``RequestOptions`` is the one model: the REST query (``http/rest.py``), the gRPC ``Options``
message (``grpc/messages.py``) and a stream's config (``app/streams.py``) are adapters that fill
it, so all of them take the same values, refuse the same ones (unknown names included) with the
same ``bad_option``, and the OpenAPI document shows the ranges and defaults enforced.
Defaults and some limits are settings: ``options_model(settings)`` is the model a service runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields as dataclass_fields
from enum import StrEnum
from typing import Annotated, Any

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic import create_model as pydantic_model
from pydantic.fields import FieldInfo

from service.config import Quality, Settings
from service.errors import BadOption, TooManyBoxes
from service.pipeline.presets import PRESETS
from service.pipeline.records import PipelineOptions
from service.pipeline.solve import Camera, default_camera

# Pixel coordinates and focal lengths beyond this are no camera's: they only overflow the maths.
MAX_PIXEL_COORDINATE = 1e6
# The widest rectilinear lenses see about 65 degrees off axis at the image's corners (130
# diagonal); past this an image's corner is no pinhole camera's.
MAX_RAY_ANGLE_DEG = 70.0


class Include(StrEnum):
    """Optional outputs; pose, box and scores are always returned."""

    MESH = "mesh"
    LANDMARKS = "landmarks"
    LANDMARKS68 = "landmarks68"
    IRIS = "iris"
    VISIBILITY = "visibility"
    BLENDSHAPES = "blendshapes"


INCLUDABLE = tuple(item.value for item in Include)


def _split_commas(value: Any) -> Any:
    """``include=mesh,landmarks68`` or ``include=mesh&include=landmarks68``."""
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list | tuple):
        return value
    return [part.strip() for item in values
            for part in (item.split(",") if isinstance(item, str) else [item])
            if not isinstance(part, str) or part.strip()]


def _sorted_unique(values: list[Include]) -> list[Include]:
    return sorted(set(values))


Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
FocalLength = Annotated[float, Field(gt=0.0, le=MAX_PIXEL_COORDINATE, allow_inf_nan=False)]
PixelCoordinate = Annotated[float, Field(ge=-MAX_PIXEL_COORDINATE, le=MAX_PIXEL_COORDINATE,
                                         allow_inf_nan=False)]


class RequestOptions(BaseModel):
    """The options of one request (or stream); every field may be left out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    include: Annotated[list[Include], BeforeValidator(_split_commas),
                       AfterValidator(_sorted_unique)] = Field(
        default_factory=list,
        description=f"Any of {', '.join(INCLUDABLE)} (comma-separated or repeated); pose, box "
                    "and scores are always returned.")
    max_faces: int = Field(default=16, ge=1, le=32, description="Faces per image, best first.")
    min_score: Fraction = Field(default=0.5, description="Drop detections below this detector "
                                                         "score.")
    min_presence: Fraction = Field(
        default=0.5, description="Drop faces whose face-mesh presence score is below this; 0 "
                                 "keeps every face.")
    max_uncertainty_deg: float | None = Field(
        default=None, gt=0, le=180, allow_inf_nan=False,
        description="Drop faces whose pose.uncertainty_deg (the expected mean error of pitch, "
                    "yaw and roll, degrees) is above this; default: none dropped for it.")
    quality: Quality = Field(
        default=Quality.BALANCED,
        description="Which pipeline runs: fast (fewest model calls), balanced (more faces and "
                    "better poses than MediaPipe, at twice fast's cost), accurate (every step, "
                    "for turned faces and offline work). Each image entry says which ran.")
    min_face_px: int | None = Field(
        default=None, ge=16, le=4096,
        description="The smallest face to search for, pixels (the longer side of the face from "
                    "brows to chin); default the preset's: fast only what one pass over the "
                    "whole image finds, balanced and accurate 48 (in an image of 768 px or "
                    "less, only where that pass found no portrait: one sure, large face). "
                    "Images are searched in tiles down to it; each image entry's min_face_px "
                    "says what was searched.")
    fx: FocalLength | None = Field(default=None, description="Focal length x, pixels; alone it "
                                                             "sets fy too.")
    fy: FocalLength | None = Field(default=None, description="Focal length y, pixels.")
    cx: PixelCoordinate | None = Field(default=None, description="Principal point x, pixels.")
    cy: PixelCoordinate | None = Field(default=None, description="Principal point y, pixels.")

    @model_validator(mode="before")
    @classmethod
    def _null_is_the_default(cls, data: Any) -> Any:
        """A field sent as null (JSON stream configs) takes its default, as one left out does."""
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data

    @property
    def included(self) -> frozenset[str]:
        return frozenset(item.value for item in self.include)

    @property
    def pipeline(self) -> PipelineOptions:
        """What the pipeline reads: the options it has a field for, by name, and the includes
        that cost model calls."""
        same = {f.name: getattr(self, f.name) for f in dataclass_fields(PipelineOptions)
                if f.name in type(self).model_fields}
        return PipelineOptions(**same, iris=Include.IRIS in self.include,
                               blendshapes=Include.BLENDSHAPES in self.include)

    @property
    def min_face_px_searched(self) -> int | None:
        """The smallest face asked for, the client's or the preset's (None: one pass)."""
        return PRESETS[self.quality].min_face_asked(self.min_face_px)

    def camera_for(self, width: int, height: int, fov_deg: float) -> Camera:
        """The request's intrinsics for an image of this size, the default ones filling in;
        BadOption for intrinsics that cannot describe it."""
        fallback = default_camera(width, height, fov_deg)
        if self.fx is None and self.fy is None and self.cx is None and self.cy is None:
            return fallback
        fx = self.fx if self.fx is not None else self.fy
        fy = self.fy if self.fy is not None else self.fx
        camera = Camera(fallback.fx if fx is None else fx, fallback.fy if fy is None else fy,
                        fallback.cx if self.cx is None else self.cx,
                        fallback.cy if self.cy is None else self.cy, "request")
        check_camera_sees(camera, width, height)
        return camera


def check_camera_sees(camera: Camera, width: int, height: int) -> None:
    """BadOption unless every pixel of a ``width`` x ``height`` image lies within
    MAX_RAY_ANGLE_DEG of ``camera``'s optical axis. A principal point outside the image is fine
    (a crop of a larger photo keeps that photo's), but not one that puts the image where no
    pinhole lens sees: there a pose is meaningless (cx=99999 gave pitch -175, 262 px RMSE)."""
    corners = np.array([[0, 0], [width, 0], [0, height], [width, height]], np.float64)
    tangents = np.hypot((corners[:, 0] - camera.cx) / camera.fx,
                        (corners[:, 1] - camera.cy) / camera.fy)
    worst = int(np.argmax(tangents))
    angle_deg = float(np.degrees(np.arctan(tangents[worst])))
    if angle_deg > MAX_RAY_ANGLE_DEG:
        x, y = corners[worst].astype(int)
        raise BadOption(
            f"fx={camera.fx:g}, fy={camera.fy:g}, cx={camera.cx:g}, cy={camera.cy:g} put the "
            f"corner ({x}, {y}) of this {width}x{height} image {angle_deg:.1f} degrees off the "
            f"optical axis; a pinhole camera sees at most {MAX_RAY_ANGLE_DEG:g}. cx and cy are "
            f"pixels of the image sent (its centre is {width / 2:g}, {height / 2:g}), fx and "
            "fy its focal lengths in pixels")


def _with(field: FieldInfo, **overrides: Any) -> FieldInfo:
    return FieldInfo.merge_field_infos(field, Field(**overrides))


def options_model(settings: Settings, name: str = "RequestOptions",
                  base: type[RequestOptions] = RequestOptions,
                  **extra_fields: Any) -> type[RequestOptions]:
    """``base`` with the defaults and limits of ``settings``, plus ``extra_fields`` (pydantic's
    ``(type, Field(...))`` pairs) for what only one transport or the streams take."""
    fields = RequestOptions.model_fields
    return pydantic_model(
        name, __base__=base,
        max_faces=(int, _with(fields["max_faces"], default=settings.default_max_faces,
                              le=settings.max_faces_per_image)),
        min_score=(Fraction, _with(fields["min_score"], default=settings.default_min_score)),
        min_presence=(Fraction, _with(fields["min_presence"],
                                      default=settings.default_min_presence)),
        quality=(Quality, _with(fields["quality"], default=settings.default_quality)),
        **extra_fields)


def problems_of(errors: Sequence[Mapping[str, Any]], drop: tuple[str, ...] = ()) -> str:
    """Pydantic's errors as one line: ``max_faces: Input should be ...; ...``; ``drop``: leading
    location parts that only say where a transport carried the value (``query``)."""
    parts = []
    for problem in errors:
        location = [str(p) for p in problem.get("loc", ())]
        while location and location[0] in drop:
            location = location[1:]
        message = problem.get("msg", "")
        if problem.get("type") == "extra_forbidden":
            message = "unknown option"
        parts.append(f"{'.'.join(location)}: {message}" if location else message)
    return "; ".join(parts)


def validate_options(model: type[RequestOptions], data: dict[str, Any],
                     prefix: str = "") -> RequestOptions:
    """``data`` validated by ``model``; raises BadOption (``prefix``: where it came from)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadOption(f"{prefix}{problems_of(exc.errors())}") from None


def check_boxes(boxes: np.ndarray, where: str, limit: int) -> np.ndarray:
    """(N, 4) client boxes of one image (``where``: how errors name them, ``boxes[2]``),
    returned if valid; raises BadOption or TooManyBoxes."""
    if len(boxes) > limit:
        raise TooManyBoxes(f"{where}: {len(boxes)} boxes; the limit is {limit}")
    if (not np.isfinite(boxes).all() or (np.abs(boxes) > MAX_PIXEL_COORDINATE).any()
            or (boxes[:, 2:] <= boxes[:, :2]).any()):
        raise BadOption(f"{where}: every box needs x1 < x2 and y1 < y2, in pixels up to "
                        f"{MAX_PIXEL_COORDINATE:g}")
    return boxes
