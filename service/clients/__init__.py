"""The clients: REST and gRPC (``remote``), the resumable batch over gRPC (``batch``, `facepose
batch`), and facepose in your own process (``local``, `facepose estimate`). The remote clients
load none of the server's code; ``local`` is the server's pipeline in process.

    from service.clients import RestClient, GrpcClient
"""

from service.clients.remote import GrpcClient, RestClient, grpc_options

__all__ = ["GrpcClient", "RestClient", "grpc_options"]
