"""What the gateway says of itself: the mesh topology, the models loaded, health, readiness and
Prometheus metrics."""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations at run time.

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.app.core import Core
from service.http import schemas
from service.http.responses import JSONResponse
from service.pipeline.solve import load_canonical_face
from service.wire import BLENDSHAPE_NAMES


def info_router(core: Core) -> APIRouter:
    settings = core.settings
    router = APIRouter()

    @router.get("/v1/mesh/topology", response_model=schemas.MeshTopology)
    async def mesh_topology() -> Response:
        face = load_canonical_face()
        return JSONResponse({
            "num_vertices": len(face.vertices_mm),
            "triangles": face.triangles.tolist(),
            "landmarks68": face.landmarks68.tolist(),
            "canonical_vertices_mm": face.vertices_mm.round(4).tolist(),
            "blendshape_names": list(BLENDSHAPE_NAMES),
        }, headers={"Cache-Control": "public, max-age=86400"})

    @router.get("/v1/models", response_model=schemas.ModelsResponse)
    async def models() -> Response:
        return JSONResponse({
            "runtime": settings.runtime,
            "ready": core.backend_ready(),
            "models": [{
                "name": spec.name,
                "max_batch_size": spec.max_batch_size,
                "inputs": {t.name: list(t.dims) for t in spec.inputs},
                "outputs": {t.name: list(t.dims) for t in spec.outputs},
            } for spec in core.runtime.specs.values()],
        })

    @router.get("/healthz", response_model=schemas.Health)
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    @router.get("/readyz", response_model=schemas.Health,
                responses={503: {"model": schemas.Health}})
    async def readyz() -> Response:
        ready = await core.is_ready()
        return JSONResponse({"status": "ok" if ready else "not_ready"},
                            status_code=200 if ready else 503)

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router
