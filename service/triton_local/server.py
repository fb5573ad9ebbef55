"""Install, configure, start and stop a local Triton server."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import httpx
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from service.model_build.fetch import default_cache_dir, fetch_package
from service.model_build.sources import Package

PYTRITON = Package(
    requirement="nvidia-pytriton==0.7.0",
    filename="nvidia_pytriton-0.7.0-py3-none-manylinux_2_35_x86_64.whl",
    sha256="21f063ff93bb426d0c06b7a55e7eb9efcfe62c0dddd9a908e9877e18710128df",
    # Only the server binary is used, never the package: pytriton pins numpy<2.
    pip_args=("--python-version", "3.11", "--platform", "manylinux_2_35_x86_64"),
)
SERVER_ROOT = "pytriton/tritonserver"
LIBS = "nvidia_pytriton.libs"
PYTHON_TAG = f"{sys.version_info.major}.{sys.version_info.minor}"


def install_server(workdir: Path, cache: Path | None = None) -> Path:
    """Unpack the tritonserver binary, the python backend and its stub from the pinned wheel.

    Returns the unpacked root; a second call reuses it.
    """
    root = workdir / "server"
    marker = root / f".{PYTRITON.sha256[:16]}"
    if marker.exists():
        return root
    wheel = fetch_package(PYTRITON, cache or default_cache_dir())
    shutil.rmtree(root, ignore_errors=True)
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.infolist():
            if member.filename.startswith((SERVER_ROOT + "/", LIBS + "/")):
                path = Path(archive.extract(member, root))
                mode = member.external_attr >> 16
                if mode:
                    path.chmod(mode & 0o777 | 0o600)
    stub = root / SERVER_ROOT / "python_backend_stubs" / PYTHON_TAG / "triton_python_backend_stub"
    # The python backend looks for its stub beside itself, not in the per-version folders.
    shutil.copy2(stub, root / SERVER_ROOT / "backends" / "python")
    marker.touch()
    return root


def stub_requirements() -> list[str]:
    """What the python backend's stub needs: its C++ side was built against NumPy 1, so it
    hands back empty outputs from NumPy 2 arrays; ONNX Runtime as in the gateway, so that
    both runtimes compute the same numbers."""
    import onnxruntime

    return ["numpy>=1.26,<2", f"onnxruntime=={onnxruntime.__version__}"]


def install_stub_environment(workdir: Path) -> Path:
    """A virtual environment for the stub; returns its bin/ folder. Reused while current."""
    env_dir = workdir / "stub-env"
    requirements = stub_requirements()
    marker = env_dir / "facepose-requirements.txt"
    if marker.exists() and marker.read_text().split() == requirements:
        return env_dir / "bin"
    shutil.rmtree(env_dir, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
    subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", *requirements], check=True)
    marker.write_text("\n".join(requirements))
    return env_dir / "bin"


def mirror_repository(source: Path, target: Path, intra_op_threads: int = 1) -> Path:
    """A python-backend copy of a model repository: same names, tensors and batching, with
    ONNX Runtime on the CPU in place of the GPU onnxruntime backend."""
    shutil.rmtree(target, ignore_errors=True)
    template = Path(__file__).with_name("python_model.py")
    for config_path in sorted(source.glob("*/config.pbtxt")):
        config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
        onnx_path = (config_path.parent / "1" / "model.onnx").resolve()
        if not onnx_path.exists():
            raise FileNotFoundError(f"{onnx_path} is missing: run `facepose models build`")
        config.ClearField("platform")
        config.backend = "python"
        config.ClearField("optimization")
        del config.instance_group[:]
        config.instance_group.add(kind=model_config_pb2.ModelInstanceGroup.KIND_CPU, count=1)
        config.parameters["onnx_path"].string_value = str(onnx_path)
        config.parameters["intra_op_threads"].string_value = str(intra_op_threads)
        version = target / config.name / "1"
        version.mkdir(parents=True)
        shutil.copy(template, version / "model.py")
        (target / config.name / "config.pbtxt").write_text(text_format.MessageToString(config))
    return target


class LocalTriton:
    """A tritonserver process on loopback ports, ready when ``start`` returns."""

    def __init__(self, repository: Path, workdir: Path, http_port: int = 8000,
                 grpc_port: int = 8001, metrics_port: int = 8002,
                 address: str = "127.0.0.1") -> None:
        self.repository = repository
        self.workdir = workdir
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.address = address
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def run_dir(self) -> Path:
        """This instance's mirror repository and log; the installed server is shared."""
        return self.workdir / f"run-{self.grpc_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.address}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.address}:{self.http_port}"

    def _environment(self, root: Path, stub_bin: Path) -> dict[str, str]:
        # The stub runs this interpreter's libpython and finds numpy and onnxruntime through
        # the python first on PATH; it ignores PYTHONPATH.
        lib_dirs = [sysconfig.get_config_var("LIBDIR") or "", str(root / LIBS)]
        env = dict(os.environ)
        env.pop("VIRTUAL_ENV", None)
        env["PATH"] = f"{stub_bin}{os.pathsep}{env.get('PATH', '')}"
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            [*lib_dirs, env.get("LD_LIBRARY_PATH", "")]).strip(os.pathsep)
        return env

    def start(self, timeout_s: float = 60.0) -> LocalTriton:
        root = install_server(self.workdir)
        stub_bin = install_stub_environment(self.workdir)
        mirror = mirror_repository(self.repository, self.run_dir / "model_repository")
        log = (self.run_dir / "tritonserver.log").open("ab")
        self.process = subprocess.Popen(
            [str(root / SERVER_ROOT / "bin" / "tritonserver"),
             f"--model-repository={mirror}",
             f"--backend-directory={root / SERVER_ROOT / 'backends'}",
             "--allow-gpu-metrics=false", "--exit-timeout-secs=5",
             f"--http-address={self.address}", f"--http-port={self.http_port}",
             f"--grpc-address={self.address}", f"--grpc-port={self.grpc_port}",
             f"--metrics-address={self.address}", f"--metrics-port={self.metrics_port}"],
            env=self._environment(root, stub_bin), stdout=log, stderr=subprocess.STDOUT,
        )
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.process.returncode}; see "
                                   f"{self.run_dir / 'tritonserver.log'}")
            try:
                if httpx.get(f"{self.http_url}/v2/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"tritonserver not ready after {timeout_s} s")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> LocalTriton:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
