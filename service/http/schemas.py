"""The public JSON shapes. Field names are the API: clients and the evaluation depend on them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from service.config import Quality
from service.pipeline.records import DropReason

Point2 = list[float]
Point3 = list[float]


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable error code, e.g. `corrupt_image`.")
    message: str = Field(description="What went wrong, for a person.")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class CameraOut(BaseModel):
    fx: float
    fy: float
    cx: float
    cy: float
    source: Literal["request", "default"] = Field(
        description="`request` when the client gave the intrinsics, else `default`."
    )


class EulerDeg(BaseModel):
    pitch: float = Field(description="Degrees; positive: head up.")
    yaw: float = Field(description="Degrees; positive: the nose moves to image left.")
    roll: float = Field(description="Degrees; positive: the eye line turns clockwise.")


class PoseOut(BaseModel):
    euler_deg: EulerDeg
    rotation_matrix: list[list[float]] = Field(
        description="3x3 R mapping the canonical face (OpenCV axes, mm) into the camera frame."
    )
    quaternion_wxyz: list[float] = Field(description="R as a unit quaternion, w >= 0.")
    translation_mm: list[float] = Field(description="t: the model origin in the camera frame.")
    reprojection_rmse_px: float
    uncertainty_deg: float = Field(
        description="The expected mean absolute error of (pitch, yaw, roll) for this face, "
                    "degrees: from how turned it is, how far its separate fits disagree, its "
                    "presence score and size (calibrated on held-out AFLW2000-3D photos; see "
                    "docs/uncertainty.png). Filter with max_uncertainty_deg.")


class MeshOut(BaseModel):
    vertices_mm: list[Point3] = Field(description="468 vertices in the camera frame, mm.")


class IrisOut(BaseModel):
    centre: Point2 = Field(description="Iris centre, image pixels.")
    contour: list[Point2] = Field(description="Four points on the iris edge, image pixels.")
    radius_px: float


class IrisPair(BaseModel):
    right: IrisOut = Field(description="The subject's right eye (image left when facing).")
    left: IrisOut


class VisibilityOut(BaseModel):
    vertices: list[bool] = Field(
        description="468 flags, in mesh vertex order: the vertex faces the camera and no part "
                    "of the fitted mesh hides it."
    )
    landmarks68: list[bool] = Field(description="The same flags for the 68 iBUG points.")


class FaceOut(BaseModel):
    box: list[float] = Field(description="x1, y1, x2, y2 in image pixels.")
    box_index: int | None = Field(
        default=None, description="Which of the image's `boxes` the face was fitted in (0 "
                                  "first); null for a face the detector found.")
    score: float = Field(description="Detector confidence; 1.0 for a box the client gave.")
    presence: float = Field(description="Face-mesh model's face-presence score.")
    pose: PoseOut
    landmarks68: list[Point2] | None = Field(
        default=None, description="68 iBUG 300-W points, image pixels (include=landmarks68)."
    )
    landmarks: list[Point2] | None = Field(
        default=None, description="468 mesh points, image pixels (include=landmarks); 478 "
        "where FaceMesh V2 fitted the face: then its irises, the subject's right then left, each "
        "centre and four edge points."
    )
    mesh: MeshOut | None = Field(default=None, description="With include=mesh.")
    iris: IrisPair | None = Field(default=None, description="With include=iris.")
    visibility: VisibilityOut | None = Field(default=None, description="With include=visibility.")
    blendshapes: dict[str, float] | None = Field(
        default=None, description="With include=blendshapes, where FaceMesh V2 fitted the face: "
        "MediaPipe's 52 blendshape scores in [0, 1] by name (`_neutral`, `browDownLeft`, ... "
        "`noseSneerRight`).")


class DroppedBoxOut(BaseModel):
    box_index: int = Field(description="Which of the image's `boxes` (0 first).")
    reason: DropReason = Field(
        description="The option that dropped its face (`max_faces`: boxes past it are not "
                    "fitted; `min_presence`: the face mesh sees no face there; "
                    "`max_uncertainty_deg`), or `no_pose`: the fit gave no finite pose.")
    message: str = Field(description="The same, for a person, with the values compared.")


class ImageOut(BaseModel):
    index: int
    width: int | None = None
    height: int | None = None
    camera: CameraOut | None = None
    faces: list[FaceOut] = Field(default_factory=list)
    quality: Quality | None = Field(default=None, description="The preset that ran.")
    min_face_px: int | None = Field(
        default=None, description="The smallest face searched for, pixels (a client's box: "
                                  "none searched for).")
    dropped_boxes: list[DroppedBoxOut] = Field(
        default_factory=list, description="The client's boxes whose face is not in `faces`, "
                                          "and why; every box is in one or the other.")
    error: ErrorDetail | None = None


class FacesResponse(BaseModel):
    images: list[ImageOut]


class MeshTopology(BaseModel):
    num_vertices: int
    triangles: list[list[int]] = Field(description="Vertex index triples, counter-clockwise.")
    landmarks68: list[int] = Field(description="Vertex indices of the 68 iBUG points, in order.")
    canonical_vertices_mm: list[Point3] = Field(
        description="The canonical face in OpenCV axes (x right, y down, z away from the "
        "viewer), mm: a face's vertices are about R @ v + t."
    )
    blendshape_names: list[str] = Field(
        description="The names of a face's 52 blendshape scores (include=blendshapes), in the "
        "model's order.")


class ModelInfo(BaseModel):
    name: str
    max_batch_size: int
    inputs: dict[str, list[int]]
    outputs: dict[str, list[int]]
    sha256: str | None = None


class ModelsResponse(BaseModel):
    runtime: str
    ready: bool
    models: list[ModelInfo]


class Health(BaseModel):
    status: Literal["ok", "not_ready"]
