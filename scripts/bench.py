"""facepose against the peer a user would otherwise pick, on the same images, in one run.

    python scripts/bench.py [--concurrency 1 4 16 64] [--requests 120] [--out bench.json]
                            [--no-triton] [--no-peer]

Images: one face at VGA, one face in a 1080p JPEG, six faces at 1280x720 (made from
scikit-image's astronaut). Rows: facepose over REST and gRPC with the embedded runtime, the same
through a local Triton, and the peer: mediapipe==0.10.21's Python face mesh + cv2.solvePnP in
one process (installed into .bench/peer-env by this script). CPU seconds per image count the
serving processes (gateway, and Triton with its model processes), not the load generator.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.client import GrpcClient
from service.triton_local.server import LocalTriton

REPO = Path(__file__).resolve().parent.parent
PEER_ENV = REPO / ".bench" / "peer-env"
PEER_REQUIREMENT = "mediapipe==0.10.21"
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
def gateway(env: dict[str, str], log_path: Path | None = None
            ) -> Iterator[tuple[str, str, int]]:
    """A gateway (`facepose serve`) on free loopback ports; yields (url, grpc target, pid).

    Its output goes to ``log_path``, else nowhere. Shared by the scripts under scripts/.
    """
    http_port, grpc_port = free_port(), free_port()
    log = open(log_path, "wb") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve"], cwd=REPO,
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


def measure(send: Callable[[bytes], None], images: list[bytes], concurrency: int,
            requests: int, cpu: Callable[[], float]) -> dict[str, float]:
    for image in images:  # warm-up
        send(image)
    latencies: list[float] = []

    def one(i: int) -> None:
        started = time.perf_counter()
        send(images[i % len(images)])
        latencies.append(time.perf_counter() - started)

    cpu_before, started = cpu(), time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(requests)))
    wall = time.perf_counter() - started
    return {"images_per_s": requests / wall,
            "p50_ms": 1000 * float(np.percentile(latencies, 50)),
            "p99_ms": 1000 * float(np.percentile(latencies, 99)),
            "cpu_s_per_image": (cpu() - cpu_before) / requests}


def facepose_rows(label: str, env: dict[str, str], images: dict[str, bytes],
                  concurrencies: list[int], requests: int,
                  extra_cpu: Callable[[], float] = lambda: 0.0) -> list[dict[str, Any]]:
    rows = []
    mixed = list(images.values())
    with gateway(env) as (url, target, pid):
        http = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=256))
        rpc = GrpcClient(target, timeout_s=120)

        def rest(image: bytes) -> None:
            http.post(f"{url}/v1/faces", content=image,
                      headers={"Content-Type": "image/jpeg"}).raise_for_status()

        def grpc_call(image: bytes) -> None:
            rpc.estimate([image])

        def cpu() -> float:
            return process_tree_cpu(pid) + extra_cpu()

        faces = {name: len(http.post(f"{url}/v1/faces", content=image,
                                     headers={"Content-Type": "image/jpeg"}
                                     ).json()["images"][0]["faces"])
                 for name, image in images.items()}

        for transport, send in (("REST", rest), ("gRPC", grpc_call)):
            for concurrency in concurrencies:
                figures = measure(send, mixed, concurrency, max(requests, 4 * concurrency), cpu)
                rows.append({"runtime": label, "transport": transport, "images": "mixed",
                             "concurrency": concurrency, **figures, "faces": faces})
        # Single-image latency on the 640x480 one-face JPEG.
        figures = measure(rest, [images["vga_1face"]], 1, requests // 2, cpu)
        rows.append({"runtime": label, "transport": "REST", "images": "vga_1face",
                     "concurrency": 1, **figures})
        http.close()
        rpc.close()
    return rows


def peer_rows(paths: dict[str, Path], repeats: int) -> list[dict[str, Any]]:
    python = PEER_ENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_ENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", PEER_REQUIREMENT],
                       check=True)
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "peer.json"
        subprocess.run([str(python), str(REPO / "scripts" / "peer_mediapipe.py"),
                        str(REPO / "service" / "data" / "canonical_face.npz"),
                        *map(str, paths.values()), "--repeats", str(repeats),
                        "--out", str(out)], check=True)
        result = json.loads(out.read_text())
    all_latencies = [s for values in result["latencies_s"].values() for s in values]
    vga = result["latencies_s"]["vga_1face.jpg"]
    return [
        {"runtime": "peer (mediapipe)", "transport": "in-process", "images": "mixed",
         "concurrency": 1, "images_per_s": result["images"] / result["wall_s"],
         "p50_ms": 1000 * statistics.median(all_latencies),
         "p99_ms": 1000 * float(np.percentile(all_latencies, 99)),
         "cpu_s_per_image": result["cpu_s"] / result["images"], "faces": result["faces"]},
        {"runtime": "peer (mediapipe)", "transport": "in-process", "images": "vga_1face",
         "concurrency": 1, "images_per_s": 1 / statistics.mean(vga),
         "p50_ms": 1000 * statistics.median(vga), "p99_ms": 1000 * float(np.percentile(vga, 99)),
         "cpu_s_per_image": float("nan")},
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--requests", type=int, default=120)
    parser.add_argument("--out", type=Path, default=REPO / "bench.json")
    parser.add_argument("--no-triton", action="store_true")
    parser.add_argument("--no-peer", action="store_true")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        paths = make_images(Path(scratch))
        images = {name: path.read_bytes() for name, path in paths.items()}
        if not args.no_peer:
            rows += peer_rows(paths, repeats=max(10, args.requests // 3))
        rows += facepose_rows("embedded", {"FACEPOSE_RUNTIME": "embedded"}, images,
                              args.concurrency, args.requests)
        if not args.no_triton:
            with LocalTriton(REPO / "model_repository", REPO / ".triton", free_port(),
                             free_port(), free_port()) as triton:
                assert triton.process is not None
                triton_pid = triton.process.pid
                rows += facepose_rows(
                    "triton (local CPU)", {"FACEPOSE_RUNTIME": "triton",
                                           "FACEPOSE_TRITON_URL": triton.grpc_url},
                    images, args.concurrency, args.requests,
                    extra_cpu=lambda: process_tree_cpu(triton_pid))
    print(f"{'runtime':<20}{'transport':<12}{'images':<14}{'conc':>5}{'images/s':>10}"
          f"{'p50 ms':>9}{'p99 ms':>9}{'CPU s/img':>11}")
    for row in rows:
        print(f"{row['runtime']:<20}{row['transport']:<12}{row['images']:<14}"
              f"{row['concurrency']:>5}{row['images_per_s']:>10.1f}{row['p50_ms']:>9.1f}"
              f"{row['p99_ms']:>9.1f}{row['cpu_s_per_image']:>11.4f}")
    peer = {r["images"]: r for r in rows if r["runtime"].startswith("peer")}
    ours = [r for r in rows if r["runtime"] == "embedded"]
    if peer and ours:
        best = max((r for r in ours if r["images"] == "mixed" and r["transport"] == "REST"),
                   key=lambda r: r["images_per_s"])
        vga = next(r for r in ours if r["images"] == "vga_1face")
        ratio = best["images_per_s"] / peer["mixed"]["images_per_s"]
        print(f"\nthroughput facepose/peer (REST, embedded, best concurrency "
              f"{best['concurrency']}): {ratio:.2f}x")
        print(f"p50 latency facepose/peer (640x480 one face, concurrency 1): "
              f"{vga['p50_ms'] / peer['vga_1face']['p50_ms']:.2f}x")
        print("faces found per image: facepose " + ", ".join(
            f"{name} {count}" for name, count in best["faces"].items()) + "; peer " + ", ".join(
            f"{Path(name).stem} {count}" for name, count in peer["mixed"]["faces"].items()))
    args.out.write_text(json.dumps(rows, indent=2))
    print(f"raw numbers: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
