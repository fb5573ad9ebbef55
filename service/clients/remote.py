"""Python clients for facepose over REST and gRPC; both return the REST JSON shapes.

    from service.clients import GrpcClient, RestClient

    with RestClient("http://127.0.0.1:8080") as rest:
        entries = rest.faces([open("a.jpg", "rb").read()], include=["landmarks68"])
    with GrpcClient("127.0.0.1:50051") as rpc:
        entries = rpc.estimate([open("a.jpg", "rb").read()], include=["mesh"])
        for item_id, entry in rpc.stream((path, data) for path, data in items):
            ...
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import grpc
import httpx

from service.grpc import facepose_pb2 as pb
from service.grpc import facepose_pb2_grpc as pb_grpc
from service.grpc.decode import (
    INCLUDE_VALUES,
    INTRINSICS_OPTIONS,
    OPTION_NAMES,
    image_result_to_dict,
)

# Room for many full-size images per call, as the server allows.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
# The clients' own error code for a path they could not read (the service never sends it).
UNREADABLE_FILE = "unreadable_file"


def check_include(include: Sequence[str]) -> list[str]:
    """The names, or ValueError for one the service does not know."""
    if isinstance(include, str):
        include = [include]
    unknown = sorted(set(include) - set(INCLUDE_VALUES))
    if unknown:
        raise ValueError(f"include: unknown value(s) {unknown}; choose from "
                         f"{sorted(INCLUDE_VALUES)}")
    return list(include)


def check_option_names(options: dict[str, Any], known: Sequence[str]) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; choose from {sorted(known)}")


def grpc_options(include: Sequence[str] = (), **options: Any) -> pb.Options:
    """The Options message from REST's option names (``max_faces=4``, ``fx=800.0``, ...), those
    given as None left unset; ValueError for a name the service does not know."""
    check_option_names(options, OPTION_NAMES)
    message = pb.Options(include=[INCLUDE_VALUES[name] for name in check_include(include)])
    for name, value in options.items():
        if value is not None:
            setattr(message.intrinsics if name in INTRINSICS_OPTIONS else message, name, value)
    return message


class RestClient:
    def __init__(self, base_url: str, timeout_s: float = 60.0) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s)

    def faces(self, images: Sequence[bytes], include: Sequence[str] = (),
              boxes: Sequence[Sequence[Sequence[float]]] | None = None,
              **options: float | int | str | None) -> list[dict[str, Any]]:
        """One entry per image, in order (``schemas.ImageOut``); raises httpx.HTTPStatusError
        for a 4xx/5xx, whose JSON body is ``{"error": {"code", "message"}}``."""
        check_option_names(options, OPTION_NAMES)
        params: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
        if include:
            params["include"] = ",".join(check_include(include))
        if boxes is not None:
            params["boxes"] = json.dumps([[list(map(float, b)) for b in image_boxes]
                                          for image_boxes in boxes])
        files = [("images", (f"image{i}", data, "application/octet-stream"))
                 for i, data in enumerate(images)]
        response = self._http.post("/v1/faces", params=params, files=files)
        response.raise_for_status()
        return list(response.json()["images"])

    def mesh_topology(self) -> dict[str, Any]:
        response = self._http.get("/v1/mesh/topology")
        response.raise_for_status()
        return dict(response.json())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GrpcClient:
    def __init__(self, target: str, timeout_s: float | None = 60.0) -> None:
        self._channel = grpc.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
        self._stub = pb_grpc.FacePoseStub(self._channel)
        self.timeout_s = timeout_s

    def estimate(self, images: Sequence[bytes], include: Sequence[str] = (),
                 boxes: Sequence[Sequence[Sequence[float]] | None] | None = None,
                 **options: Any) -> list[dict[str, Any]]:
        """One entry per image, in order; raises grpc.RpcError for a failed call and
        ValueError for an option the service does not know."""
        messages = []
        for i, data in enumerate(images):
            image = pb.Image(data=data)
            image_boxes = boxes[i] if boxes is not None else None
            if image_boxes is not None:
                image.use_boxes = True
                image.boxes.extend(pb.Box(x1=b[0], y1=b[1], x2=b[2], y2=b[3])
                                   for b in image_boxes)
            messages.append(image)
        request = pb.EstimateRequest(images=messages,
                                     options=grpc_options(include, **options))
        response = self._stub.Estimate(request, timeout=self.timeout_s)
        return [image_result_to_dict(result) for result in response.results]

    def stream(self, items: Iterable[tuple[str, bytes]], include: Sequence[str] = (),
               **options: Any) -> Iterator[tuple[str, dict[str, Any]]]:
        """(id, entry) for each (id, image) sent, as they finish; ValueError for an option the
        service does not know."""
        shared = grpc_options(include, **options)
        requests = (pb.StreamRequest(id=item_id, image=pb.Image(data=data), options=shared)
                    for item_id, data in items)
        for result in self._stub.EstimateStream(requests, timeout=self.timeout_s):
            yield result.id, image_result_to_dict(result.result)

    def mesh_topology(self) -> pb.MeshTopology:
        return self._stub.GetMeshTopology(pb.GetMeshTopologyRequest(), timeout=self.timeout_s)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
