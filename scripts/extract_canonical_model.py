"""Extract MediaPipe's metric canonical face model into ``service/data/canonical_face.npz``.

The model (468 vertices in centimetres, 898 triangles, UVs and Procrustes weights) ships inside
the npm package ``@mediapipe/face_mesh`` as the serialized ``GeometryPipelineMetadata`` protobuf
``geometry_pipeline_metadata_landmarks.binarypb``, packed into
``face_mesh_solution_packed_assets.data``. This script fetches the pinned package with
``npm pack``, checks its SHA-256, cuts the file out of the asset bundle and decodes it with a
small protobuf wire-format reader (no mediapipe or protobuf package needed).

Usage: ``python scripts/extract_canonical_model.py [--out PATH] [--tgz PATH]``
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PACKAGE = "@mediapipe/face_mesh"
VERSION = "0.4.1657299874"
TGZ_NAME = f"mediapipe-face_mesh-{VERSION}.tgz"
SHA256 = "c08a7e0742a326285da666cf81d77c8b6f3a181a2ee948cadaf166008e0d3bc7"
DATA_MEMBER = "package/face_mesh_solution_packed_assets.data"
LOADER_MEMBER = "package/face_mesh_solution_packed_assets_loader.js"
ASSET_NAME = "geometry_pipeline_metadata_landmarks.binarypb"
BYTE_RANGE = (3_737_848, 3_757_224)

NUM_VERTICES = 468
NUM_TRIANGLES = 898
FIRST_VERTEX_CM = (0.0, -3.406404, 5.979507)
CM_TO_MM = 10.0

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "service" / "data" / "canonical_face.npz"

# Field numbers from mediapipe/modules/face_geometry/protos/geometry_pipeline_metadata.proto
# and mesh_3d.proto.
META_CANONICAL_MESH = 1
META_PROCRUSTES_BASIS = 2
META_INPUT_SOURCE = 3
MESH_VERTEX_TYPE = 1
MESH_PRIMITIVE_TYPE = 2
MESH_VERTEX_BUFFER = 3
MESH_INDEX_BUFFER = 4
REF_LANDMARK_ID = 1
REF_WEIGHT = 2
VERTEX_TYPE_PT = 0
PRIMITIVE_TYPE_TRIANGLE = 0
FLOATS_PER_VERTEX_PT = 5

WIRE_VARINT = 0
WIRE_FIXED64 = 1
WIRE_LEN = 2
WIRE_FIXED32 = 5

# MediaPipe 468-mesh vertex for each point of the iBUG 300-W 68-point markup, in iBUG order.
# Eyes, nose and lips: the vertices at the iBUG definitions (corners, lid and lip midpoints).
# Jaw: iBUG's contour starts level with the outer eye corners and runs to the chin; here it is
# the 17 vertices of the mesh's face outline (127 ... 152 ... 356) closest to equal arc-length
# steps along that outline (tests/test_canonical_model.py re-derives them). Brows: the mesh's
# upper brow contour, outer end first.
LANDMARKS68: tuple[int, ...] = (
    # 0-16 jaw, from the subject's right cheek (image left) to the left cheek
    127, 234, 132, 58, 172, 136, 150, 176, 152, 400, 379, 365, 397, 288, 361, 454, 356,
    # 17-21 right brow, 22-26 left brow
    70, 63, 105, 66, 107,
    336, 296, 334, 293, 300,
    # 27-30 nose bridge, 31-35 nostrils
    168, 197, 5, 4,
    75, 97, 2, 326, 305,
    # 36-41 right eye, 42-47 left eye
    33, 160, 158, 133, 153, 144,
    362, 385, 387, 263, 373, 380,
    # 48-59 outer lips, 60-67 inner lips
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    78, 82, 13, 312, 308, 317, 14, 87,
)  # fmt: skip


@dataclass
class Mesh3d:
    """A decoded ``Mesh3d`` message: flat vertex and index buffers."""

    vertex_type: int = VERTEX_TYPE_PT
    primitive_type: int = PRIMITIVE_TYPE_TRIANGLE
    vertex_buffer: list[float] = field(default_factory=list)
    index_buffer: list[int] = field(default_factory=list)


@dataclass
class GeometryPipelineMetadata:
    """A decoded ``GeometryPipelineMetadata`` message."""

    input_source: int = 0
    canonical_mesh: Mesh3d = field(default_factory=Mesh3d)
    procrustes_basis: list[tuple[int, float]] = field(default_factory=list)


# --- protobuf wire format -------------------------------------------------------------------


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode one base-128 varint at ``pos``; return (value, position after it)."""
    value = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift >= 64:
            raise ValueError("varint longer than 10 bytes")


def iter_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field number, wire type, payload) for each field of a message.

    The payload is an int for varints and the raw bytes for the other wire types.
    """
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        payload: int | bytes
        if wire == WIRE_VARINT:
            payload, pos = read_varint(buf, pos)
        elif wire == WIRE_FIXED64:
            payload, pos = buf[pos : pos + 8], pos + 8
        elif wire == WIRE_LEN:
            length, pos = read_varint(buf, pos)
            payload, pos = buf[pos : pos + length], pos + length
        elif wire == WIRE_FIXED32:
            payload, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire} for field {number}")
        if pos > len(buf):
            raise ValueError(f"field {number} runs past the end of the message")
        yield number, wire, payload


def decode_floats(wire: int, payload: int | bytes) -> list[float]:
    """Decode a repeated-float field occurrence, packed (wire 2) or not (wire 5)."""
    if wire not in (WIRE_LEN, WIRE_FIXED32) or not isinstance(payload, bytes):
        raise ValueError(f"float field with wire type {wire}")
    if len(payload) % 4:
        raise ValueError("packed float field length is not a multiple of 4")
    return np.frombuffer(payload, dtype="<f4").tolist()


def decode_uints(wire: int, payload: int | bytes) -> list[int]:
    """Decode a repeated-uint32 field occurrence, packed (wire 2) or not (wire 0)."""
    if wire == WIRE_VARINT and isinstance(payload, int):
        return [payload]
    if wire != WIRE_LEN or not isinstance(payload, bytes):
        raise ValueError(f"uint32 field with wire type {wire}")
    values: list[int] = []
    pos = 0
    while pos < len(payload):
        value, pos = read_varint(payload, pos)
        values.append(value)
    return values


def expect_varint(number: int, wire: int, payload: int | bytes) -> int:
    """Return a scalar varint payload, failing on any other wire type."""
    if wire != WIRE_VARINT or not isinstance(payload, int):
        raise ValueError(f"field {number}: expected a varint, got wire type {wire}")
    return payload


def expect_bytes(number: int, wire: int, payload: int | bytes) -> bytes:
    """Return a length-delimited payload, failing on any other wire type."""
    if wire != WIRE_LEN or not isinstance(payload, bytes):
        raise ValueError(f"field {number}: expected length-delimited, got wire type {wire}")
    return payload


# --- MediaPipe messages ---------------------------------------------------------------------


def decode_mesh(buf: bytes) -> Mesh3d:
    """Decode a ``Mesh3d`` message."""
    mesh = Mesh3d()
    for number, wire, payload in iter_fields(buf):
        if number == MESH_VERTEX_TYPE:
            mesh.vertex_type = expect_varint(number, wire, payload)
        elif number == MESH_PRIMITIVE_TYPE:
            mesh.primitive_type = expect_varint(number, wire, payload)
        elif number == MESH_VERTEX_BUFFER:
            mesh.vertex_buffer.extend(decode_floats(wire, payload))
        elif number == MESH_INDEX_BUFFER:
            mesh.index_buffer.extend(decode_uints(wire, payload))
        else:
            raise ValueError(f"Mesh3d: unexpected field {number}")
    return mesh


def decode_landmark_ref(buf: bytes) -> tuple[int, float]:
    """Decode a ``WeightedLandmarkRef`` message into (landmark_id, weight)."""
    landmark_id, weight = 0, 0.0
    for number, wire, payload in iter_fields(buf):
        if number == REF_LANDMARK_ID:
            landmark_id = expect_varint(number, wire, payload)
        elif number == REF_WEIGHT:
            (weight,) = decode_floats(wire, payload)
        else:
            raise ValueError(f"WeightedLandmarkRef: unexpected field {number}")
    return landmark_id, weight


def decode_metadata(buf: bytes) -> GeometryPipelineMetadata:
    """Decode a ``GeometryPipelineMetadata`` message."""
    meta = GeometryPipelineMetadata()
    for number, wire, payload in iter_fields(buf):
        if number == META_CANONICAL_MESH:
            meta.canonical_mesh = decode_mesh(expect_bytes(number, wire, payload))
        elif number == META_PROCRUSTES_BASIS:
            meta.procrustes_basis.append(decode_landmark_ref(expect_bytes(number, wire, payload)))
        elif number == META_INPUT_SOURCE:
            meta.input_source = expect_varint(number, wire, payload)
        else:
            raise ValueError(f"GeometryPipelineMetadata: unexpected field {number}")
    return meta


# --- package handling -----------------------------------------------------------------------


def fetch_package(dest: Path) -> Path:
    """Download the pinned npm tarball into ``dest`` with ``npm pack``; return its path."""
    subprocess.run(
        ["npm", "pack", f"{PACKAGE}@{VERSION}", "--silent"],
        cwd=dest,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    tgz = dest / TGZ_NAME
    if not tgz.is_file():
        raise FileNotFoundError(f"npm pack did not produce {tgz}")
    return tgz


def check_sha256(path: Path) -> None:
    """Fail unless the file's SHA-256 is the pinned one."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SHA256:
        raise ValueError(f"{path}: sha256 {digest}, expected {SHA256}")


def read_member(tgz: Path, name: str) -> bytes:
    """Return the bytes of one file inside the tarball."""
    with tarfile.open(tgz, "r:gz") as tar:
        member = tar.extractfile(name)
        if member is None:
            raise FileNotFoundError(f"{name} not in {tgz}")
        return member.read()


def asset_range(loader_js: str, asset_name: str) -> tuple[int, int]:
    """Find (start, end) of an asset in the bundle from the loader's file table."""
    pattern = r'"filename":\s*"([^"]*)",\s*"start":\s*(\d+),\s*"end":\s*(\d+)'
    for filename, start, end in re.findall(pattern, loader_js):
        if filename.rsplit("/", 1)[-1] == asset_name:
            return int(start), int(end)
    raise KeyError(f"{asset_name} not listed in the loader")


def extract_metadata_bytes(tgz: Path) -> bytes:
    """Cut the GeometryPipelineMetadata file out of the packed asset bundle."""
    listed = asset_range(read_member(tgz, LOADER_MEMBER).decode("utf-8"), ASSET_NAME)
    if listed != BYTE_RANGE:
        raise ValueError(f"loader lists {ASSET_NAME} at {listed}, expected {BYTE_RANGE}")
    start, end = BYTE_RANGE
    return read_member(tgz, DATA_MEMBER)[start:end]


# --- arrays and output ----------------------------------------------------------------------


def build_arrays(meta: GeometryPipelineMetadata) -> dict[str, np.ndarray]:
    """Turn decoded metadata into the npz arrays (see ``main`` for the keys and shapes)."""
    mesh = meta.canonical_mesh
    if mesh.vertex_type != VERTEX_TYPE_PT or mesh.primitive_type != PRIMITIVE_TYPE_TRIANGLE:
        raise ValueError(f"unexpected mesh types {mesh.vertex_type}, {mesh.primitive_type}")
    buffer = np.asarray(mesh.vertex_buffer, dtype=np.float32).reshape(-1, FLOATS_PER_VERTEX_PT)
    triangles = np.asarray(mesh.index_buffer, dtype=np.int64).reshape(-1, 3)
    if buffer.shape[0] != NUM_VERTICES or triangles.shape[0] != NUM_TRIANGLES:
        raise ValueError(f"got {buffer.shape[0]} vertices and {triangles.shape[0]} triangles")
    if not np.allclose(buffer[0, :3], FIRST_VERTEX_CM, atol=1e-6):
        raise ValueError(f"first vertex {buffer[0, :3]}, expected {FIRST_VERTEX_CM}")
    if triangles.min() < 0 or triangles.max() >= NUM_VERTICES:
        raise ValueError("triangle index out of range")

    weights = np.zeros(NUM_VERTICES, dtype=np.float64)
    for landmark_id, weight in meta.procrustes_basis:
        weights[landmark_id] = weight

    landmarks68 = np.asarray(LANDMARKS68, dtype=np.int32)
    if landmarks68.shape != (68,) or len(set(LANDMARKS68)) != 68:
        raise ValueError("LANDMARKS68 must hold 68 distinct indices")

    return {
        "vertices_mm": buffer[:, :3].astype(np.float64) * CM_TO_MM,
        "triangles": triangles.astype(np.int32),
        "uv": np.ascontiguousarray(buffer[:, 3:5]),
        "procrustes_weights": weights,
        "landmarks68": landmarks68,
    }


def source_note() -> str:
    """Provenance string stored in the npz as ``source``."""
    start, end = BYTE_RANGE
    return json.dumps(
        {
            "package": f"npm:{PACKAGE}@{VERSION}",
            "tarball_sha256": SHA256,
            "file": f"{DATA_MEMBER}[{start}:{end}] ({ASSET_NAME})",
            "license": "Apache-2.0, Copyright Google LLC",
            "units": "vertices_mm = source centimetres * 10",
            "landmarks68": "iBUG 300-W order; jaw by arc length along the mesh outline",
        },
        sort_keys=True,
    )


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write a compressed npz byte-for-byte reproducibly.

    ``np.savez_compressed`` stamps each member with the current time, so the zip is built here
    with a fixed timestamp and a fixed member order.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for key in sorted(arrays):
            data = io.BytesIO()
            np.lib.format.write_array(data, np.asanyarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data.getvalue(), compresslevel=9)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .npz path")
    parser.add_argument(
        "--tgz", type=Path, default=None, help=f"use this local copy of {TGZ_NAME} (hash-checked)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Fetch, decode and write the npz.

    Keys: vertices_mm (468, 3) float64, triangles (898, 3) int32, uv (468, 2) float32,
    procrustes_weights (468,) float64, landmarks68 (68,) int32, source () str.
    """
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tgz = args.tgz if args.tgz is not None else fetch_package(Path(tmp))
        check_sha256(tgz)
        meta = decode_metadata(extract_metadata_bytes(tgz))
    arrays = build_arrays(meta)
    arrays["source"] = np.array(source_note())
    write_npz(args.out, arrays)
    print(
        f"wrote {args.out}: {NUM_VERTICES} vertices, {NUM_TRIANGLES} triangles, "
        f"{len(meta.procrustes_basis)} Procrustes landmarks, input_source={meta.input_source}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
