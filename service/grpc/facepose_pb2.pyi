from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Include(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INCLUDE_UNSPECIFIED: _ClassVar[Include]
    INCLUDE_MESH: _ClassVar[Include]
    INCLUDE_LANDMARKS: _ClassVar[Include]
    INCLUDE_LANDMARKS68: _ClassVar[Include]
    INCLUDE_IRIS: _ClassVar[Include]
    INCLUDE_VISIBILITY: _ClassVar[Include]
    INCLUDE_BLENDSHAPES: _ClassVar[Include]
INCLUDE_UNSPECIFIED: Include
INCLUDE_MESH: Include
INCLUDE_LANDMARKS: Include
INCLUDE_LANDMARKS68: Include
INCLUDE_IRIS: Include
INCLUDE_VISIBILITY: Include
INCLUDE_BLENDSHAPES: Include

class Intrinsics(_message.Message):
    __slots__ = ("fx", "fy", "cx", "cy")
    FX_FIELD_NUMBER: _ClassVar[int]
    FY_FIELD_NUMBER: _ClassVar[int]
    CX_FIELD_NUMBER: _ClassVar[int]
    CY_FIELD_NUMBER: _ClassVar[int]
    fx: float
    fy: float
    cx: float
    cy: float
    def __init__(self, fx: _Optional[float] = ..., fy: _Optional[float] = ..., cx: _Optional[float] = ..., cy: _Optional[float] = ...) -> None: ...

class Options(_message.Message):
    __slots__ = ("include", "max_faces", "min_score", "min_presence", "intrinsics", "quality", "min_face_px", "max_uncertainty_deg")
    INCLUDE_FIELD_NUMBER: _ClassVar[int]
    MAX_FACES_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    MIN_PRESENCE_FIELD_NUMBER: _ClassVar[int]
    INTRINSICS_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    MIN_FACE_PX_FIELD_NUMBER: _ClassVar[int]
    MAX_UNCERTAINTY_DEG_FIELD_NUMBER: _ClassVar[int]
    include: _containers.RepeatedScalarFieldContainer[Include]
    max_faces: int
    min_score: float
    min_presence: float
    intrinsics: Intrinsics
    quality: str
    min_face_px: int
    max_uncertainty_deg: float
    def __init__(self, include: _Optional[_Iterable[_Union[Include, str]]] = ..., max_faces: _Optional[int] = ..., min_score: _Optional[float] = ..., min_presence: _Optional[float] = ..., intrinsics: _Optional[_Union[Intrinsics, _Mapping]] = ..., quality: _Optional[str] = ..., min_face_px: _Optional[int] = ..., max_uncertainty_deg: _Optional[float] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("x1", "y1", "x2", "y2")
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    X2_FIELD_NUMBER: _ClassVar[int]
    Y2_FIELD_NUMBER: _ClassVar[int]
    x1: float
    y1: float
    x2: float
    y2: float
    def __init__(self, x1: _Optional[float] = ..., y1: _Optional[float] = ..., x2: _Optional[float] = ..., y2: _Optional[float] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("data", "boxes", "use_boxes")
    DATA_FIELD_NUMBER: _ClassVar[int]
    BOXES_FIELD_NUMBER: _ClassVar[int]
    USE_BOXES_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    boxes: _containers.RepeatedCompositeFieldContainer[Box]
    use_boxes: bool
    def __init__(self, data: _Optional[bytes] = ..., boxes: _Optional[_Iterable[_Union[Box, _Mapping]]] = ..., use_boxes: bool = ...) -> None: ...

class EstimateRequest(_message.Message):
    __slots__ = ("images", "options")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    options: Options
    def __init__(self, images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., options: _Optional[_Union[Options, _Mapping]] = ...) -> None: ...

class EstimateResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ImageResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ImageResult, _Mapping]]] = ...) -> None: ...

class StreamRequest(_message.Message):
    __slots__ = ("id", "image", "options")
    ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    id: str
    image: Image
    options: Options
    def __init__(self, id: _Optional[str] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., options: _Optional[_Union[Options, _Mapping]] = ...) -> None: ...

class StreamResult(_message.Message):
    __slots__ = ("id", "result")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    id: str
    result: ImageResult
    def __init__(self, id: _Optional[str] = ..., result: _Optional[_Union[ImageResult, _Mapping]] = ...) -> None: ...

class Camera(_message.Message):
    __slots__ = ("fx", "fy", "cx", "cy", "source")
    FX_FIELD_NUMBER: _ClassVar[int]
    FY_FIELD_NUMBER: _ClassVar[int]
    CX_FIELD_NUMBER: _ClassVar[int]
    CY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    fx: float
    fy: float
    cx: float
    cy: float
    source: str
    def __init__(self, fx: _Optional[float] = ..., fy: _Optional[float] = ..., cx: _Optional[float] = ..., cy: _Optional[float] = ..., source: _Optional[str] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Euler(_message.Message):
    __slots__ = ("pitch", "yaw", "roll")
    PITCH_FIELD_NUMBER: _ClassVar[int]
    YAW_FIELD_NUMBER: _ClassVar[int]
    ROLL_FIELD_NUMBER: _ClassVar[int]
    pitch: float
    yaw: float
    roll: float
    def __init__(self, pitch: _Optional[float] = ..., yaw: _Optional[float] = ..., roll: _Optional[float] = ...) -> None: ...

class Pose(_message.Message):
    __slots__ = ("euler_deg", "rotation_matrix", "quaternion_wxyz", "translation_mm", "reprojection_rmse_px", "uncertainty_deg")
    EULER_DEG_FIELD_NUMBER: _ClassVar[int]
    ROTATION_MATRIX_FIELD_NUMBER: _ClassVar[int]
    QUATERNION_WXYZ_FIELD_NUMBER: _ClassVar[int]
    TRANSLATION_MM_FIELD_NUMBER: _ClassVar[int]
    REPROJECTION_RMSE_PX_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_DEG_FIELD_NUMBER: _ClassVar[int]
    euler_deg: Euler
    rotation_matrix: _containers.RepeatedScalarFieldContainer[float]
    quaternion_wxyz: _containers.RepeatedScalarFieldContainer[float]
    translation_mm: _containers.RepeatedScalarFieldContainer[float]
    reprojection_rmse_px: float
    uncertainty_deg: float
    def __init__(self, euler_deg: _Optional[_Union[Euler, _Mapping]] = ..., rotation_matrix: _Optional[_Iterable[float]] = ..., quaternion_wxyz: _Optional[_Iterable[float]] = ..., translation_mm: _Optional[_Iterable[float]] = ..., reprojection_rmse_px: _Optional[float] = ..., uncertainty_deg: _Optional[float] = ...) -> None: ...

class Iris(_message.Message):
    __slots__ = ("centre", "contour", "radius_px")
    CENTRE_FIELD_NUMBER: _ClassVar[int]
    CONTOUR_FIELD_NUMBER: _ClassVar[int]
    RADIUS_PX_FIELD_NUMBER: _ClassVar[int]
    centre: _containers.RepeatedScalarFieldContainer[float]
    contour: _containers.RepeatedScalarFieldContainer[float]
    radius_px: float
    def __init__(self, centre: _Optional[_Iterable[float]] = ..., contour: _Optional[_Iterable[float]] = ..., radius_px: _Optional[float] = ...) -> None: ...

class IrisPair(_message.Message):
    __slots__ = ("right", "left")
    RIGHT_FIELD_NUMBER: _ClassVar[int]
    LEFT_FIELD_NUMBER: _ClassVar[int]
    right: Iris
    left: Iris
    def __init__(self, right: _Optional[_Union[Iris, _Mapping]] = ..., left: _Optional[_Union[Iris, _Mapping]] = ...) -> None: ...

class Face(_message.Message):
    __slots__ = ("box", "score", "presence", "pose", "landmarks68", "landmarks", "mesh_vertices_mm", "iris", "visible", "visible68", "track_id", "blendshapes", "box_index")
    BOX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_FIELD_NUMBER: _ClassVar[int]
    POSE_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS68_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    MESH_VERTICES_MM_FIELD_NUMBER: _ClassVar[int]
    IRIS_FIELD_NUMBER: _ClassVar[int]
    VISIBLE_FIELD_NUMBER: _ClassVar[int]
    VISIBLE68_FIELD_NUMBER: _ClassVar[int]
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    BLENDSHAPES_FIELD_NUMBER: _ClassVar[int]
    BOX_INDEX_FIELD_NUMBER: _ClassVar[int]
    box: _containers.RepeatedScalarFieldContainer[float]
    score: float
    presence: float
    pose: Pose
    landmarks68: _containers.RepeatedScalarFieldContainer[float]
    landmarks: _containers.RepeatedScalarFieldContainer[float]
    mesh_vertices_mm: _containers.RepeatedScalarFieldContainer[float]
    iris: IrisPair
    visible: _containers.RepeatedScalarFieldContainer[bool]
    visible68: _containers.RepeatedScalarFieldContainer[bool]
    track_id: int
    blendshapes: _containers.RepeatedScalarFieldContainer[float]
    box_index: int
    def __init__(self, box: _Optional[_Iterable[float]] = ..., score: _Optional[float] = ..., presence: _Optional[float] = ..., pose: _Optional[_Union[Pose, _Mapping]] = ..., landmarks68: _Optional[_Iterable[float]] = ..., landmarks: _Optional[_Iterable[float]] = ..., mesh_vertices_mm: _Optional[_Iterable[float]] = ..., iris: _Optional[_Union[IrisPair, _Mapping]] = ..., visible: _Optional[_Iterable[bool]] = ..., visible68: _Optional[_Iterable[bool]] = ..., track_id: _Optional[int] = ..., blendshapes: _Optional[_Iterable[float]] = ..., box_index: _Optional[int] = ...) -> None: ...

class DroppedBox(_message.Message):
    __slots__ = ("box_index", "reason", "message")
    BOX_INDEX_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    box_index: int
    reason: str
    message: str
    def __init__(self, box_index: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ImageResult(_message.Message):
    __slots__ = ("index", "width", "height", "camera", "faces", "error", "quality", "min_face_px", "dropped_boxes")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    MIN_FACE_PX_FIELD_NUMBER: _ClassVar[int]
    DROPPED_BOXES_FIELD_NUMBER: _ClassVar[int]
    index: int
    width: int
    height: int
    camera: Camera
    faces: _containers.RepeatedCompositeFieldContainer[Face]
    error: Error
    quality: str
    min_face_px: int
    dropped_boxes: _containers.RepeatedCompositeFieldContainer[DroppedBox]
    def __init__(self, index: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., camera: _Optional[_Union[Camera, _Mapping]] = ..., faces: _Optional[_Iterable[_Union[Face, _Mapping]]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., quality: _Optional[str] = ..., min_face_px: _Optional[int] = ..., dropped_boxes: _Optional[_Iterable[_Union[DroppedBox, _Mapping]]] = ...) -> None: ...

class GetMeshTopologyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MeshTopology(_message.Message):
    __slots__ = ("num_vertices", "triangles", "landmarks68", "canonical_vertices_mm", "blendshape_names")
    NUM_VERTICES_FIELD_NUMBER: _ClassVar[int]
    TRIANGLES_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS68_FIELD_NUMBER: _ClassVar[int]
    CANONICAL_VERTICES_MM_FIELD_NUMBER: _ClassVar[int]
    BLENDSHAPE_NAMES_FIELD_NUMBER: _ClassVar[int]
    num_vertices: int
    triangles: _containers.RepeatedScalarFieldContainer[int]
    landmarks68: _containers.RepeatedScalarFieldContainer[int]
    canonical_vertices_mm: _containers.RepeatedScalarFieldContainer[float]
    blendshape_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, num_vertices: _Optional[int] = ..., triangles: _Optional[_Iterable[int]] = ..., landmarks68: _Optional[_Iterable[int]] = ..., canonical_vertices_mm: _Optional[_Iterable[float]] = ..., blendshape_names: _Optional[_Iterable[str]] = ...) -> None: ...

class OneEuro(_message.Message):
    __slots__ = ("min_cutoff_hz", "beta", "d_cutoff_hz")
    MIN_CUTOFF_HZ_FIELD_NUMBER: _ClassVar[int]
    BETA_FIELD_NUMBER: _ClassVar[int]
    D_CUTOFF_HZ_FIELD_NUMBER: _ClassVar[int]
    min_cutoff_hz: float
    beta: float
    d_cutoff_hz: float
    def __init__(self, min_cutoff_hz: _Optional[float] = ..., beta: _Optional[float] = ..., d_cutoff_hz: _Optional[float] = ...) -> None: ...

class Smoothing(_message.Message):
    __slots__ = ("disabled", "rotation", "translation", "landmarks")
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    ROTATION_FIELD_NUMBER: _ClassVar[int]
    TRANSLATION_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    disabled: bool
    rotation: OneEuro
    translation: OneEuro
    landmarks: OneEuro
    def __init__(self, disabled: bool = ..., rotation: _Optional[_Union[OneEuro, _Mapping]] = ..., translation: _Optional[_Union[OneEuro, _Mapping]] = ..., landmarks: _Optional[_Union[OneEuro, _Mapping]] = ...) -> None: ...

class TrackConfig(_message.Message):
    __slots__ = ("options", "detect_every", "fps", "smoothing")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    DETECT_EVERY_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    SMOOTHING_FIELD_NUMBER: _ClassVar[int]
    options: Options
    detect_every: int
    fps: float
    smoothing: Smoothing
    def __init__(self, options: _Optional[_Union[Options, _Mapping]] = ..., detect_every: _Optional[int] = ..., fps: _Optional[float] = ..., smoothing: _Optional[_Union[Smoothing, _Mapping]] = ...) -> None: ...

class TrackFrame(_message.Message):
    __slots__ = ("id", "data", "timestamp_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    id: str
    data: bytes
    timestamp_ms: float
    def __init__(self, id: _Optional[str] = ..., data: _Optional[bytes] = ..., timestamp_ms: _Optional[float] = ...) -> None: ...

class TrackRequest(_message.Message):
    __slots__ = ("config", "frame")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    config: TrackConfig
    frame: TrackFrame
    def __init__(self, config: _Optional[_Union[TrackConfig, _Mapping]] = ..., frame: _Optional[_Union[TrackFrame, _Mapping]] = ...) -> None: ...

class TrackResult(_message.Message):
    __slots__ = ("id", "frame", "timestamp_ms", "detected", "result")
    ID_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    DETECTED_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    id: str
    frame: int
    timestamp_ms: float
    detected: bool
    result: ImageResult
    def __init__(self, id: _Optional[str] = ..., frame: _Optional[int] = ..., timestamp_ms: _Optional[float] = ..., detected: bool = ..., result: _Optional[_Union[ImageResult, _Mapping]] = ...) -> None: ...
