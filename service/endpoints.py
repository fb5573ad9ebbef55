"""Several servers named as one: a comma-separated list of ``host:port``, each host a name (a
Kubernetes headless Service resolves to every ready pod) or an address. Calls are spread over
every address the names resolve to, one that fails is skipped for a while, and the names are
resolved again now and then, so that pods an autoscaler adds get calls too.

Used by the gateway for its Triton servers and by ``facepose batch`` for gateways. gRPC's own
``round_robin`` would spread calls over one name's addresses, but it re-resolves a name only
when a connection breaks (new pods get nothing), and says nothing of which address failed.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

# How often the names are resolved again: how soon a new pod gets calls.
RESOLVE_EVERY_S = 30.0
# How long an address that failed, or said it was not ready, is skipped.
SKIP_FAILED_S = 5.0

Resolver = Callable[[str, int], list[str]]


@dataclass(frozen=True)
class Server:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_servers(text: str) -> list[Server]:
    """``"a:8001,b:8001"`` (or ``"[::1]:8001"``) -> servers; ValueError says what is wrong."""
    servers = []
    for entry in (part.strip() for part in text.split(",")):
        host, sep, port = entry.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{entry!r} is not host:port (servers: {text!r})")
        servers.append(Server(host, int(port)))
    return servers


def address_text(ip: str, port: int) -> str:
    """An address as gRPC and HTTP clients take it (IPv6 in brackets)."""
    return f"[{ip}]:{port}" if ipaddress.ip_address(ip).version == 6 else f"{ip}:{port}"


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` has, in the resolver's order, without repeats: its IPv4 ones
    where it has any (a dual-stack pod, or localhost, would otherwise count twice), else its
    IPv6 ones. Empty when the lookup fails."""
    try:
        ipaddress.ip_address(host)
        return [address_text(host, port)]
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return []  # not resolvable now: the caller keeps what it had
    ipv4 = [info for info in found if info[0] == socket.AF_INET]
    return list(dict.fromkeys(address_text(str(info[4][0]), port) for info in ipv4 or found))


class Endpoints:
    """The addresses of some servers, handed out in turn; thread-safe."""

    def __init__(self, servers: list[Server], resolver: Resolver = resolve_host,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.servers = servers
        self._resolver = resolver
        self._clock = clock
        self._lock = threading.Lock()
        self._by_server: dict[Server, list[str]] = {}
        self._addresses: list[str] = []
        self._resolved_at = -float("inf")
        self._resolving = False
        self._skip_until: dict[str, float] = {}
        self._turns: dict[str, int] = {}

    @classmethod
    def parse(cls, text: str) -> Endpoints:
        return cls(parse_servers(text))

    def addresses(self) -> list[str]:
        """Every address now. The names are resolved again when RESOLVE_EVERY_S has passed
        (or none was found), by one caller while the others go on with the last answer; a
        name whose lookup finds nothing keeps its last addresses (a resolver restarting must
        not look like every server gone)."""
        with self._lock:
            due = not self._resolving and (
                not self._addresses or self._clock() - self._resolved_at >= RESOLVE_EVERY_S)
            if not due:
                return list(self._addresses)
            self._resolving = True
        try:
            found = {server: self._resolver(server.host, server.port) for server in self.servers}
        finally:
            with self._lock:
                self._resolving = False
        with self._lock:
            for server, addresses in found.items():
                if addresses:
                    self._by_server[server] = addresses
            self._addresses = list(dict.fromkeys(
                a for server in self.servers for a in self._by_server.get(server, [])))
            self._resolved_at = self._clock()
            self._skip_until = {a: t for a, t in self._skip_until.items()
                                if a in self._addresses}
            return list(self._addresses)

    def usable(self, address: str) -> bool:
        with self._lock:
            return self._skip_until.get(address, -float("inf")) <= self._clock()

    def in_turn(self, kind: str = "") -> list[str]:
        """Every address, the next in turn for calls of ``kind`` first, then the rest; those
        skipped for a failure last (still tried when nothing else is left).

        Each kind (a model) takes its own turns: with one turn for all, a pipeline calling
        two models in a row over two servers would send every call of one model to one.
        """
        addresses = self.addresses()
        with self._lock:
            if not addresses:
                return []
            turn = self._turns.get(kind, 0)
            self._turns[kind] = turn + 1
            start = turn % len(addresses)
        rotated = addresses[start:] + addresses[:start]
        return sorted(rotated, key=lambda a: not self.usable(a))

    def skip(self, address: str, for_s: float = SKIP_FAILED_S) -> None:
        """``address`` failed or is not ready: others go first for ``for_s`` (a later skip
        never shortens an earlier one)."""
        with self._lock:
            until = self._clock() + for_s
            self._skip_until[address] = max(until, self._skip_until.get(address, until))
