"""facepose against the peer a user would otherwise pick, on the same images, in one run.

    python scripts/bench.py [--concurrency 1 4 16 64] [--requests 120] [--out bench.json]
                            [--no-triton] [--no-peer] [--photos DIR] [--photo-count 200]

Images: "mixed", one face at VGA, one face in a 1080p JPEG and six faces at 1280x720 (made from
scikit-image's astronaut); "aflw450", one-face 450x450 photos of the large AFLW2000-3D dev set
(--photos; skipped where absent); "noface64", a 64x64 JPEG with no face (the gateway's fixed
cost per request). Rows: facepose over REST and gRPC with the embedded runtime, per preset
(``quality``) on aflw450, the same through a local Triton, and two peers from mediapipe==0.10.21
(installed into .bench/peer-env by this script), each in one process: "the peer", the
FaceLandmarker task (FaceMesh V2, pose from its transformation matrix, blendshapes; what a user
would pick today and what the targets are set against), and the legacy Python face mesh (V1) +
cv2.solvePnP, kept for comparison with earlier runs.
CPU seconds per image count the serving processes (gateway, and Triton with its model
processes), not the load generator; "gateway" is the gateway's own share (with Triton, what a
GPU node's gateway cores pay: the target is 3 ms at concurrency 8 on aflw450). calls/img and
KB/img: the gateway's model calls and the bytes of their input tensors per image (on Triton,
what goes over the wire), from its /metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eval_data import DEV_LARGE, missing_data_message

from service.clients import GrpcClient
from service.config import get_settings
from service.triton_local.server import LocalTriton

REPO = Path(__file__).resolve().parent.parent
PEER_ENV = REPO / ".bench" / "peer-env"
PEER_REQUIREMENT = "mediapipe==0.10.21"
# The peers, run in PEER_ENV: the FaceLandmarker task (V2 mesh, pose from its transformation
# matrix; "the peer" the targets are set against) and the legacy face mesh + cv2.solvePnP.
PEER_SCRIPTS = {"landmarker": REPO / "scripts" / "peer_landmarker.py",
                "legacy": REPO / "scripts" / "peer_mediapipe.py"}
PEER_LABELS = {"landmarker": "peer (FaceLandmarker)", "legacy": "legacy (face_mesh V1)"}
QUALITIES = ("fast", "balanced", "accurate")
TICKS = os.sysconf("SC_CLK_TCK")


def make_images(folder: Path) -> dict[str, Path]:
    face = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    vga = np.full((480, 640, 3), 90, np.uint8)
    vga[:, 64:576] = cv2.resize(face, (512, 480))
    hd = np.full((1080, 1920, 3), 90, np.uint8)
    hd[140:940, 560:1360] = cv2.resize(face, (800, 800))
    tile = cv2.resize(face, (426, 360))
    group = np.vstack([np.hstack([tile, tile[:, ::-1], tile]),
                       np.hstack([tile[:, ::-1], tile, tile[:, ::-1]])])[:720, :1280]
    paths = {"vga_1face": folder / "vga_1face.jpg", "hd_1face": folder / "hd_1face.jpg",
             "group_6faces": folder / "group_6faces.jpg"}
    for name, image in (("vga_1face", vga), ("hd_1face", hd), ("group_6faces", group)):
        cv2.imwrite(str(paths[name]), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return paths


def no_face_jpeg() -> bytes:
    """64x64 of a grey ramp: decoded and searched, with nothing found."""
    ramp = np.tile(np.linspace(60, 200, 64, dtype=np.uint8)[None, :, None], (64, 1, 3))
    ok, encoded = cv2.imencode(".jpg", ramp)
    assert ok
    return encoded.tobytes()


def photo_paths(directory: Path, count: int) -> list[Path]:
    return sorted((directory / "images").glob("*.jpg"))[:count]


def process_tree_cpu(root: int) -> float:
    """CPU seconds of a process and all its living descendants."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, parent = int(entry.name), int(fields[1])
        children.setdefault(parent, []).append(pid)
        times[pid] = (int(fields[11]) + int(fields[12])) / TICKS
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        total += times.get(pid, 0.0)
        stack.extend(children.get(pid, []))
    return total


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def gateway(env: dict[str, str], log_path: Path | None = None,
            command: list[str] | None = None) -> Iterator[tuple[str, str, int]]:
    """A gateway (`facepose serve`, or ``command`` that serves as it does) on free loopback
    ports; yields (url, grpc target, pid).

    Its output goes to ``log_path``, else nowhere. Shared by the scripts under scripts/.
    """
    http_port, grpc_port = free_port(), free_port()
    log = open(log_path, "wb") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        command or [sys.executable, "-m", "service.cli", "serve"], cwd=REPO,
        env={**os.environ, "FACEPOSE_MAX_IN_FLIGHT_REQUESTS": "256", **env,
             "FACEPOSE_HOST": "127.0.0.1", "FACEPOSE_PORT": str(http_port),
             "FACEPOSE_GRPC_PORT": str(grpc_port)},
        stdout=log, stderr=subprocess.STDOUT if log_path is not None else subprocess.DEVNULL)
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the gateway exited with {process.returncode}"
                                   + (f"; see {log_path}" if log_path else ""))
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the gateway was not ready within 120 s")
            time.sleep(0.2)
        yield url, f"127.0.0.1:{grpc_port}", process.pid
    finally:
        process.terminate()
        process.wait(timeout=60)
        if log_path is not None:
            log.close()


def model_traffic(url: str) -> tuple[float, float]:
    """The gateway's model calls and bytes of input tensors so far, from its /metrics."""
    calls = sent = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("facepose_inference_duration_seconds_count{"):
            calls += float(line.rsplit(" ", 1)[1])
        elif line.startswith("facepose_inference_input_bytes_total{"):
            sent += float(line.rsplit(" ", 1)[1])
    return calls, sent


def measure(send: Callable[[bytes], None], images: list[bytes], concurrency: int,
            requests: int, cpu: Callable[[], float],
            traffic: Callable[[], tuple[float, float]] | None = None,
            gateway_cpu: Callable[[], float] | None = None) -> dict[str, float]:
    """gateway_cpu: the gateway's own CPU seconds, where ``cpu`` counts a model server too."""
    for image in images:  # warm-up
        send(image)
    latencies: list[float] = []

    def one(i: int) -> None:
        started = time.perf_counter()
        send(images[i % len(images)])
        latencies.append(time.perf_counter() - started)

    own = gateway_cpu or cpu
    calls_before, sent_before = traffic() if traffic else (np.nan, np.nan)
    own_before, cpu_before, started = own(), cpu(), time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(requests)))
    wall = time.perf_counter() - started
    cpu_after, own_after = cpu(), own()
    calls_after, sent_after = traffic() if traffic else (np.nan, np.nan)
    return {"images_per_s": requests / wall,
            "p50_ms": 1000 * float(np.percentile(latencies, 50)),
            "p99_ms": 1000 * float(np.percentile(latencies, 99)),
            "cpu_s_per_image": (cpu_after - cpu_before) / requests,
            "gateway_cpu_s_per_image": (own_after - own_before) / requests,
            "model_calls_per_image": (calls_after - calls_before) / requests,
            "input_kb_per_image": (sent_after - sent_before) / 1024 / requests}


def facepose_rows(label: str, env: dict[str, str], images: dict[str, bytes],
                  photos: list[bytes], concurrencies: list[int], requests: int,
                  extra_cpu: Callable[[], float] = lambda: 0.0,
                  qualities: tuple[str, ...] = QUALITIES) -> list[dict[str, Any]]:
    """Rows for one gateway: the mixed set over REST and gRPC at each concurrency (server
    default preset), the VGA frame and the no-face JPEG, and the photos at concurrency 1 and 8
    with each preset."""
    rows = []
    mixed = list(images.values())
    with gateway(env) as (url, target, pid):
        http = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=256))
        rpc = GrpcClient(target, timeout_s=120)

        def rest(image: bytes, quality: str | None = None) -> None:
            http.post(f"{url}/v1/faces", content=image,
                      params={"quality": quality} if quality else None,
                      headers={"Content-Type": "image/jpeg"}).raise_for_status()

        def grpc_call(image: bytes) -> None:
            rpc.estimate([image])

        def gateway_cpu() -> float:
            return process_tree_cpu(pid)

        def cpu() -> float:
            return gateway_cpu() + extra_cpu()

        def traffic() -> tuple[float, float]:
            return model_traffic(url)

        def faces_in(image: bytes, quality: str | None = None) -> int:
            return len(http.post(f"{url}/v1/faces", content=image,
                                 params={"quality": quality} if quality else None,
                                 headers={"Content-Type": "image/jpeg"}
                                 ).json()["images"][0]["faces"])

        faces = {name: faces_in(image) for name, image in images.items()}
        for transport, send in (("REST", rest), ("gRPC", grpc_call)):
            for concurrency in concurrencies:
                figures = measure(send, mixed, concurrency, max(requests, 4 * concurrency), cpu,
                                  traffic, gateway_cpu)
                rows.append({"runtime": label, "transport": transport, "images": "mixed",
                             "quality": "default", "concurrency": concurrency, **figures,
                             "faces": faces})
        # Single-image latency on the 640x480 one-face JPEG.
        figures = measure(rest, [images["vga_1face"]], 1, requests // 2, cpu, traffic,
                          gateway_cpu)
        rows.append({"runtime": label, "transport": "REST", "images": "vga_1face",
                     "quality": "default", "concurrency": 1, **figures})
        for concurrency in (1, 8):
            figures = measure(rest, [no_face_jpeg()], concurrency, 2 * requests, cpu, traffic,
                              gateway_cpu)
            rows.append({"runtime": label, "transport": "REST", "images": "noface64",
                         "quality": "default", "concurrency": concurrency, **figures})
        for quality in qualities if photos else ():
            found = sum(faces_in(photo, quality) for photo in photos)

            def send(image: bytes, quality: str = quality) -> None:
                rest(image, quality)

            for concurrency in (1, 8):
                figures = measure(send, photos, concurrency, max(len(photos), requests), cpu,
                                  traffic, gateway_cpu)
                rows.append({"runtime": label, "transport": "REST", "images": "aflw450",
                             "quality": quality, "concurrency": concurrency, **figures,
                             "faces": {"aflw450": found}})
        http.close()
        rpc.close()
    return rows


def peer_python() -> Path:
    """The peer environment's interpreter, made on first use (mediapipe pins an old NumPy)."""
    python = PEER_ENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_ENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", PEER_REQUIREMENT],
                       check=True)
    return python


def run_peer(paths: list[Path], repeats: int, peer: str, task: Path | None = None
             ) -> dict[str, Any]:
    """One peer script (PEER_SCRIPTS) over the images in the peer environment: its JSON (timings,
    faces, poses). ``task``: the face_landmarker.task bundle, which the landmarker needs."""
    if peer == "legacy":
        models = [str(REPO / "service" / "data" / "canonical_face.npz")]
        options = []
    else:
        if task is None:
            raise ValueError("the FaceLandmarker peer needs its face_landmarker.task")
        models, options = [], ["--task", str(task)]
    python = peer_python()
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "peer.json"
        subprocess.run([str(python), str(PEER_SCRIPTS[peer]), *models, *map(str, paths),
                        *options, "--repeats", str(repeats), "--out", str(out)], check=True)
        return dict(json.loads(out.read_text()))


def peer_row(label: str, images: str, result: dict[str, Any], latencies: list[float],
             faces: dict[str, int] | None = None, own_cpu: bool = True) -> dict[str, Any]:
    """own_cpu: whether the run's CPU time is this set's alone (not a subset's)."""
    return {"runtime": label, "transport": "in-process", "images": images,
            "quality": "-", "concurrency": 1, "images_per_s": 1 / statistics.mean(latencies),
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * float(np.percentile(latencies, 99)),
            "cpu_s_per_image": result["cpu_s"] / result["images"] if own_cpu else float("nan"),
            **({"faces": faces} if faces is not None else {})}


def peer_rows(paths: dict[str, Path], photos: list[Path], repeats: int
              ) -> list[dict[str, Any]]:
    """Each peer (the FaceLandmarker, then the legacy face mesh) on the mixed set and on the
    photos, one image at a time."""
    from peer_poses import landmarker_task_path  # imports this module: not at the top

    task = landmarker_task_path()
    rows = []
    for peer, label in PEER_LABELS.items():
        result = run_peer(list(paths.values()), repeats, peer, task)
        all_latencies = [s for values in result["latencies_s"].values() for s in values]
        rows += [peer_row(label, "mixed", result, all_latencies, result["faces"]),
                 peer_row(label, "vga_1face", result, result["latencies_s"]["vga_1face.jpg"],
                          own_cpu=False)]
        if photos:
            result = run_peer(photos, 2, peer, task)
            rows.append(peer_row(label, "aflw450", result, [
                s for values in result["latencies_s"].values() for s in values],
                {"aflw450": sum(result["faces"].values())}))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--requests", type=int, default=120)
    parser.add_argument("--out", type=Path, default=REPO / "bench.json")
    parser.add_argument("--no-triton", action="store_true")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--photos", type=Path, default=DEV_LARGE)
    parser.add_argument("--photo-count", type=int, default=200)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    missing = missing_data_message("bench", args.photos, labels=False)
    if missing is not None:
        # The synthetic rows still run; the photo rows, which the targets compare, cannot.
        print(f"{missing}\nWithout it the rows on AFLW photos, and the targets' ratios, are left "
              "out.", file=sys.stderr)
    photo_files = [] if missing else photo_paths(args.photos, args.photo_count)
    photos = [path.read_bytes() for path in photo_files]
    with tempfile.TemporaryDirectory() as scratch:
        paths = make_images(Path(scratch))
        images = {name: path.read_bytes() for name, path in paths.items()}
        if not args.no_peer:
            rows += peer_rows(paths, photo_files, repeats=max(10, args.requests // 3))
        rows += facepose_rows("embedded", {"FACEPOSE_RUNTIME": "embedded"}, images, photos,
                              args.concurrency, args.requests)
        if not args.no_triton:
            with LocalTriton(REPO / "model_repository", REPO / ".triton", free_port(),
                             free_port(), free_port()) as triton:
                assert triton.process is not None
                triton_pid = triton.process.pid
                rows += facepose_rows(
                    "triton (local CPU)", {"FACEPOSE_RUNTIME": "triton",
                                           "FACEPOSE_TRITON_URL": triton.grpc_url},
                    images, photos, args.concurrency, args.requests,
                    extra_cpu=lambda: process_tree_cpu(triton_pid), qualities=("balanced",))
    print(f"{'runtime':<23}{'transport':<12}{'images':<11}{'quality':<10}{'conc':>5}"
          f"{'images/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/img':>11}{'gateway':>8}"
          f"{'calls/img':>10}{'KB/img':>8}")
    for row in rows:
        print(f"{row['runtime']:<23}{row['transport']:<12}{row['images']:<11}"
              f"{row['quality']:<10}{row['concurrency']:>5}{row['images_per_s']:>10.1f}"
              f"{row['p50_ms']:>9.1f}{row['p99_ms']:>9.1f}"
              f"{1000 * row['cpu_s_per_image']:>11.1f}"
              f"{1000 * row.get('gateway_cpu_s_per_image', np.nan):>8.1f}"
              f"{row.get('model_calls_per_image', np.nan):>10.2f}"
              f"{row.get('input_kb_per_image', np.nan):>8.0f}")
    print_ratios(rows)
    args.out.write_text(json.dumps(rows, indent=2))
    print(f"raw numbers: {args.out}")
    return 0


def print_ratios(rows: list[dict[str, Any]]) -> None:
    """The targets, against the FaceLandmarker peer: on the photos, the default preset's
    images/s at concurrency 8 at least 1.5x the peer's, and its p50 at concurrency 1 at most
    the peer's time per image. The same ratios to the legacy face mesh follow, for comparison
    with earlier runs (which measured against it)."""
    ours = [r for r in rows if r["runtime"] == "embedded"]
    default = get_settings().default_quality.value
    for peer_name, label in PEER_LABELS.items():
        peer = {r["images"]: r for r in rows if r["runtime"] == label}
        if not peer or not ours:
            continue
        targets = peer_name == "landmarker"
        best = max((r for r in ours if r["images"] == "mixed" and r["transport"] == "REST"),
                   key=lambda r: r["images_per_s"])
        vga = next(r for r in ours if r["images"] == "vga_1face")
        print(f"\nagainst {label}")
        print(f"mixed: throughput facepose/peer (REST, embedded, best concurrency "
              f"{best['concurrency']}): "
              f"{best['images_per_s'] / peer['mixed']['images_per_s']:.2f}x;"
              f" p50 640x480 one face, concurrency 1: "
              f"{vga['p50_ms'] / peer['vga_1face']['p50_ms']:.2f}x")
        print("faces found per image: facepose " + ", ".join(
            f"{name} {count}" for name, count in best["faces"].items()) + "; peer " + ", ".join(
            f"{Path(name).stem} {count}" for name, count in peer["mixed"]["faces"].items()))
        if "aflw450" not in peer:
            continue
        base = peer["aflw450"]
        for quality in QUALITIES:
            at = {r["concurrency"]: r for r in ours
                  if r["images"] == "aflw450" and r["quality"] == quality}
            if 1 in at and 8 in at:
                goal = targets and quality == default
                print(f"aflw450 {quality:<9} throughput c8 "
                      f"{at[8]['images_per_s'] / base['images_per_s']:.2f}x the peer"
                      + (" (target >= 1.5)" if goal else "")
                      + f"; p50 c1 {at[1]['p50_ms'] / base['p50_ms']:.2f}x"
                      + (" (target <= 1.0)" if goal else "")
                      + f"; faces {at[1]['faces']['aflw450']} (peer {base['faces']['aflw450']})")


if __name__ == "__main__":
    sys.exit(main())
