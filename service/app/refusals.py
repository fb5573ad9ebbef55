"""An error turned into what a client is told: status, error body, headers, gRPC code. Every
transport refuses through this, so a 429 or 503 carries Retry-After wherever it is sent."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.errors import FaceposeError


@dataclass(frozen=True)
class Refusal:
    status: int
    code: str
    message: str
    grpc_code: str  # a name of grpc.StatusCode
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def body(self) -> dict[str, dict[str, str]]:
        """The error shape of every HTTP answer: ``{"error": {"code", "message"}}``."""
        return {"error": {"code": self.code, "message": self.message}}

    @property
    def reason(self) -> str:
        """One line, for a gRPC status's details or a WebSocket close reason."""
        return f"{self.code}: {self.message}"


def refusal_for(error: FaceposeError, retry_after_s: int) -> Refusal:
    """What the client is told of ``error``."""
    headers = {}
    if error.status in (429, 503):
        headers["Retry-After"] = str(retry_after_s)
    if error.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    # After a body not read to its end, or a fault of ours, the connection is not to be
    # reused: said, so that a client's pool drops it instead of failing its next request.
    if error.status in (408, 500):
        headers["Connection"] = "close"
    return Refusal(error.status, error.code, error.message, error.grpc_code, headers)
