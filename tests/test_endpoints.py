"""Several servers named as one (service.endpoints): parsing, turns, skipping, re-resolving.
Fast unit tests with a resolver and a clock of the test's own; the real spreading over two
Triton servers and two gateways is in test_triton.py and test_batch.py."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service import endpoints
from service.config import Settings
from service.endpoints import Endpoints, Server, parse_servers, resolve_host


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lists_names_and_addresses_parse() -> None:
    assert parse_servers("triton:8001") == [Server("triton", 8001)]
    assert parse_servers("10.0.0.1:8001, 10.0.0.2:8002") == [Server("10.0.0.1", 8001),
                                                            Server("10.0.0.2", 8002)]
    assert parse_servers("[::1]:8001") == [Server("::1", 8001)]


@pytest.mark.parametrize("text", ["triton", "triton:", ":8001", "a:8001,,b:8001", "a:99999",
                                  "a:80x1"])
def test_a_malformed_list_says_which_entry(text: str) -> None:
    with pytest.raises(ValueError, match="is not host:port"):
        parse_servers(text)


def test_settings_refuse_a_malformed_triton_url() -> None:
    with pytest.raises(ValidationError, match="is not host:port"):
        Settings(triton_url="127.0.0.1:8001,triton")


def test_addresses_stay_as_given_and_ipv6_gets_brackets() -> None:
    assert resolve_host("10.1.2.3", 8001) == ["10.1.2.3:8001"]
    assert resolve_host("::1", 8001) == ["[::1]:8001"]
    assert resolve_host("localhost", 8001) == ["127.0.0.1:8001"]  # IPv4 where it has any
    assert resolve_host("no-such-host.invalid", 8001) == []


def test_calls_take_turns_and_a_failed_address_goes_last_for_a_while() -> None:
    clock = Clock()
    spread = Endpoints(parse_servers("a:1,b:1,c:1"), lambda host, port: [f"{host}:{port}"],
                       clock)
    firsts = [spread.in_turn()[0] for _ in range(6)]
    assert firsts == ["a:1", "b:1", "c:1"] * 2
    spread.skip("b:1")
    for _ in range(3):
        order = spread.in_turn()
        assert order[-1] == "b:1" and len(order) == 3  # still tried when the rest fail
    clock.now += endpoints.SKIP_FAILED_S
    assert "b:1" in [spread.in_turn()[0] for _ in range(3)]
    spread.skip("c:1", 60.0)
    spread.skip("c:1", 1.0)  # a later, shorter skip does not cut the first short
    clock.now += 2.0
    assert not spread.usable("c:1")


def test_each_kind_of_call_takes_its_own_turns() -> None:
    """Two models called in a row over two servers: each model's calls alternate."""
    spread = Endpoints(parse_servers("a:1,b:1"), lambda host, port: [f"{host}:{port}"], Clock())
    firsts: dict[str, list[str]] = {"detector": [], "mesh": []}
    for _ in range(4):
        for kind, seen in firsts.items():
            seen.append(spread.in_turn(kind)[0])
    assert firsts == {"detector": ["a:1", "b:1"] * 2, "mesh": ["a:1", "b:1"] * 2}


def test_names_are_resolved_again_so_new_pods_get_calls() -> None:
    clock = Clock()
    pods = {"triton": ["10.0.0.1:8001"]}
    spread = Endpoints(parse_servers("triton:8001"), lambda host, port: list(pods[host]), clock)
    assert spread.addresses() == ["10.0.0.1:8001"]
    pods["triton"] = ["10.0.0.1:8001", "10.0.0.2:8001"]  # the autoscaler added one
    assert spread.addresses() == ["10.0.0.1:8001"]  # not before the interval
    clock.now += endpoints.RESOLVE_EVERY_S
    assert spread.addresses() == ["10.0.0.1:8001", "10.0.0.2:8001"]
    assert {spread.in_turn()[0] for _ in range(2)} == {"10.0.0.1:8001", "10.0.0.2:8001"}


def test_a_failed_lookup_keeps_the_last_addresses() -> None:
    """A resolver restarting (the lookup fails) must not look like every server gone."""
    clock = Clock()
    pods = {"triton": ["10.0.0.1:8001", "10.0.0.2:8001"]}
    spread = Endpoints(parse_servers("triton:8001"), lambda host, port: list(pods[host]), clock)
    assert len(spread.addresses()) == 2
    pods["triton"] = []
    clock.now += endpoints.RESOLVE_EVERY_S
    assert spread.addresses() == ["10.0.0.1:8001", "10.0.0.2:8001"]
    pods["triton"] = ["10.0.0.2:8001"]  # a pod gone: the next answer says so
    clock.now += endpoints.RESOLVE_EVERY_S
    assert spread.addresses() == ["10.0.0.2:8001"]


def test_a_name_without_addresses_is_tried_again_at_once() -> None:
    pods: dict[str, list[str]] = {"triton": []}  # a headless Service before any pod is ready
    spread = Endpoints(parse_servers("triton:8001"), lambda host, port: list(pods[host]),
                       Clock())
    assert spread.in_turn() == []
    pods["triton"] = ["10.0.0.7:8001"]
    assert spread.in_turn() == ["10.0.0.7:8001"]


def test_the_triton_runtime_closes_clients_of_pods_gone(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    """Pods come and go behind a headless name: a client per address ever seen would pile
    up. Nothing listens on these ports; readiness checks fail fast."""
    import time

    from service.runtime import triton
    from service.runtime.triton import TritonRuntime
    from tests.conftest import REPO

    monkeypatch.setattr(endpoints, "RESOLVE_EVERY_S", 0.0)
    monkeypatch.setattr(triton, "READY_CACHE_S", 0.0)
    monkeypatch.setattr(triton, "RETIRE_SLACK_S", 0.0)
    pods = {"triton": ["127.0.0.1:9", "127.0.0.1:19"]}
    runtime = TritonRuntime("triton:8001", REPO / "model_repository", timeout_s=0.05,
                            resolver=lambda host, port: list(pods[host]))
    try:
        assert not runtime.is_ready()
        clients = dict(runtime._shared)
        assert set(clients) == set(pods["triton"])
        pods["triton"] = ["127.0.0.1:9"]
        runtime.is_ready()  # checked again in the background: the pod gone is retired
        time.sleep(0.2)  # past the calls' deadline
        runtime.is_ready()  # and closed by the next check
        time.sleep(0.2)
        assert set(runtime._shared) == {"127.0.0.1:9"}
        assert runtime._retired == []
        assert runtime._shared["127.0.0.1:9"] is clients["127.0.0.1:9"]
    finally:
        runtime.close()
