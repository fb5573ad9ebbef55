from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from service.clients.batch import collect_paths, completed_paths
from tests.conftest import REPO
from tests.images import astronaut, encode

CORRUPT = {"broken/truncated.jpg", "broken/not-an-image.png"}


def make_folder(root: Path, count: int) -> set[str]:
    """``count`` real face images in nested folders, plus corrupt ones and a non-image file."""
    base = astronaut()
    paths = set()
    for i in range(count):
        turned = cv2.warpAffine(base, cv2.getRotationMatrix2D((256, 256), i * 7 % 40 - 20, 1.0),
                                (512, 512))
        path = root / f"set{i % 3}" / f"face{i:03d}.{['jpg', 'png', 'webp'][i % 3]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(turned, path.suffix))
        paths.add(str(path))
    (root / "broken").mkdir()
    jpeg = encode(base)
    (root / "broken" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "broken" / "not-an-image.png").write_bytes(b"hello")
    (root / "notes.txt").write_text("not an image and not listed")
    return paths | {str(root / name) for name in CORRUPT}


def run(source: Path, target: str, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", "batch", str(source), "--server", target,
         "--out", str(out), "--concurrency", "4", "--include", "landmarks68"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_sources_folder_glob_and_list(tmp_path: Path) -> None:
    expected = make_folder(tmp_path / "images", 6)
    assert set(collect_paths(str(tmp_path / "images"))) == expected
    assert set(collect_paths(str(tmp_path / "images" / "**" / "*.png"))) == {
        p for p in expected if p.endswith(".png")}
    listing = tmp_path / "list.txt"
    listing.write_text("# some\n" + "\n".join(sorted(expected)[:3]) + "\n\n")
    assert collect_paths(str(listing)) == sorted(expected)[:3]


def test_resume_drops_a_torn_last_line(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"path": "a", "result": {}}\n{"path": "b", "res')
    assert completed_paths(out) == {"a"}
    assert out.read_text() == '{"path": "a", "result": {}}\n'


def test_killed_and_rerun_batch_writes_every_path_once(tmp_path: Path, grpc_target: str) -> None:
    expected = make_folder(tmp_path / "images", 40)
    out = tmp_path / "results.jsonl"
    first = run(tmp_path / "images", grpc_target, out)
    deadline = time.monotonic() + 60
    while not out.exists() or len(out.read_text().splitlines()) < 8:
        assert first.poll() is None, first.stderr.read() if first.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    partial = completed_paths(out)
    assert 8 <= len(partial) < len(expected)

    second = run(tmp_path / "images", grpc_target, out)
    stdout, stderr = second.communicate(timeout=300)
    assert second.returncode == 0, stderr.decode()
    written = lines(out)
    paths = [line["path"] for line in written]
    assert sorted(paths) == sorted(expected)  # every path exactly once
    by_path = {line["path"]: line for line in written}
    for name in CORRUPT:
        assert by_path[str(tmp_path / "images" / name)]["error"]["code"] in {
            "corrupt_image", "unsupported_image"}
    good = [line for line in written if "result" in line]
    assert len(good) == len(expected) - len(CORRUPT)
    assert all(len(line["result"]["faces"]) == 1 for line in good)
    assert np.array(good[0]["result"]["faces"][0]["landmarks68"]).shape == (68, 2)
    summary = stdout.decode()
    assert f"images {len(expected) - len(partial)} (+{len(partial)} already done" in summary
    failed_now = len({str(tmp_path / "images" / name) for name in CORRUPT} - partial)
    assert f"failures {failed_now}," in summary and "images/s" in summary


@pytest.mark.slow
def test_batch_waits_for_a_server_that_comes_up_late(tmp_path: Path) -> None:
    from tests.conftest import free_port, gateway

    expected = make_folder(tmp_path / "images", 3)
    out = tmp_path / "results.jsonl"
    port = free_port()
    early = run(tmp_path / "images", f"127.0.0.1:{port}", out)
    time.sleep(1.0)  # the first tries fail: nothing listens yet
    assert early.poll() is None
    with gateway({"FACEPOSE_GRPC_PORT": str(port)}):
        stdout, stderr = early.communicate(timeout=120)
    assert early.returncode == 0, stderr.decode()
    assert sorted(line["path"] for line in lines(out)) == sorted(expected)
    assert "retries 0" not in stdout.decode()


def test_a_server_that_never_comes_still_gets_a_summary(tmp_path: Path) -> None:
    """The retries spent: exit 1 with the summary line (nothing done, why it stopped) on
    stdout, and the retry messages as plain lines on stderr, not inside a progress bar."""
    from tests.conftest import free_port

    count = len(make_folder(tmp_path / "images", 2))
    target = f"127.0.0.1:{free_port()}"
    ran = subprocess.run(
        [sys.executable, "-m", "service.cli", "batch", str(tmp_path / "images"), "--server",
         target, "--out", str(tmp_path / "out.jsonl"), "--retries", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 1, ran.stderr
    assert f"images 0 (+0 already done of {count})" in ran.stdout
    assert f"stopped with {count} left: UNAVAILABLE" in ran.stdout
    retries = [line for line in ran.stderr.splitlines() if "retrying in" in line]
    # Each retry names the gateway address that failed, and why.
    assert retries and all(line.startswith(f"{target}: UNAVAILABLE") for line in retries)
    assert "\r" not in ran.stderr  # no bar redrawn into a log


def test_batch_spreads_over_two_gateways(tmp_path: Path) -> None:
    """`--server A,B`: one stream to each gateway, both taking from the same queue; every
    image written once, each gateway serving at least 30% of them."""
    from tests.conftest import free_port, gateway

    paths = make_folder(tmp_path / "images", 24)
    ports = [free_port(), free_port()]
    with gateway({"FACEPOSE_GRPC_PORT": str(ports[0])}) as first, \
            gateway({"FACEPOSE_GRPC_PORT": str(ports[1])}) as second:
        out = tmp_path / "out.jsonl"
        process = run(tmp_path / "images", ",".join(f"127.0.0.1:{p}" for p in ports), out)
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr.decode()
        served = [metric_value(url, "facepose_batch_images_sum") for url in (first, second)]
    written = lines(out)
    assert sorted(line["path"] for line in written) == sorted(paths)
    # The two corrupt files fail at decode, before any pipeline call.
    assert sum(served) == len(paths) - len(CORRUPT)
    assert min(served) >= 0.3 * sum(served), served


def metric_value(url: str, name: str) -> float:
    import httpx

    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in {url}/metrics")


def test_batch_goes_on_through_the_other_gateway_when_one_dies(tmp_path: Path) -> None:
    from tests.conftest import free_port, gateway, gateway_process

    paths = make_folder(tmp_path / "images", 30)
    ports = [free_port(), free_port()]
    with gateway({"FACEPOSE_GRPC_PORT": str(ports[0])}), \
            gateway_process({"FACEPOSE_GRPC_PORT": str(ports[1])}) as (_, doomed):
        out = tmp_path / "out.jsonl"
        process = run(tmp_path / "images", ",".join(f"127.0.0.1:{p}" for p in ports), out)
        deadline = time.monotonic() + 120
        while not out.exists() or len(out.read_text().splitlines()) < 6:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        doomed.kill()
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr.decode()
    assert f"127.0.0.1:{ports[1]}: " in stderr.decode()  # its stream failed, and was retried
    assert sorted(line["path"] for line in lines(out)) == sorted(paths)


def batch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service.cli", "batch", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("source", ["no-such-folder", "no-such-*.jpg", "empty"])
def test_a_source_without_images_fails_and_writes_nothing(tmp_path: Path, source: str) -> None:
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out.jsonl"
    done = batch(str(tmp_path / source), "--server", "127.0.0.1:9", "--out", str(out))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"facepose batch: {tmp_path / source}: no "), done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no output, no options


def test_resuming_with_other_options_is_refused(tmp_path: Path, grpc_target: str) -> None:
    expected = make_folder(tmp_path / "images", 3)
    out = tmp_path / "out.jsonl"
    first = batch(str(tmp_path / "images"), "--server", grpc_target, "--out", str(out),
                  "--include", "landmarks68")
    assert first.returncode == 0, first.stderr
    written = out.read_text()
    assert {line["path"] for line in lines(out)} == expected
    again = batch(str(tmp_path / "images"), "--server", grpc_target, "--out", str(out),
                  "--include", "landmarks68")
    assert again.returncode == 0, again.stderr
    assert f"+{len(expected)} already done" in again.stdout, again.stdout
    other = batch(str(tmp_path / "images"), "--server", grpc_target, "--out", str(out),
                  "--include", "mesh")
    assert other.returncode == 2
    assert "holds answers made with other options" in other.stderr, other.stderr
    assert out.read_text() == written
