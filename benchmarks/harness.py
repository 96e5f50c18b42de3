"""What the storage benchmarks share: a local S3 endpoint (moto's server on 127.0.0.1, a free port, in a process
of its own), their archive options, JSON output and help formatter.

Never the internet: the endpoint is 127.0.0.1 and the credentials are fake, set in this process's environment
(children inherit them, as a node's standard credential chain would give them). The server runs in its own process
so that it does not take the GIL from the scoring it serves; its CPU time is reported (:meth:`LocalS3.cpu_s`),
since on a small machine it competes with the scorer for the same cores, which a remote store would not.
"""

from __future__ import annotations

import argparse
import json

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "batch"))
from s3server import S3  # noqa: E402 - the tests' client helpers (upload, keys, get), shared

# Fake credentials only; the config files are pointed away so that no real profile is read.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIDOCSCOREBENCH", "AWS_SECRET_ACCESS_KEY": "docscore-bench-secret-key",
               "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
               "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}

_SERVER = r"""
import logging, sys
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.WARNING)
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()  # until the parent closes the pipe (or dies)
server.stop()
"""


def use_fake_credentials() -> None:
    """Put the fake credentials in this process's environment, drop any profile or endpoint set outside."""
    os.environ.update(CREDENTIALS)
    for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        os.environ.pop(k, None)


class LocalS3(S3):
    """Start with ``with LocalS3() as s3:``; ``s3.endpoint`` is ``http://127.0.0.1:PORT``."""

    def __init__(self):
        try:
            import moto  # noqa: F401
        except ImportError as e:
            raise SystemExit(f"moto is needed for the local S3 endpoint ({e}): pip install 'docscore[dev]'")
        use_fake_credentials()
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        port = self.proc.stdout.readline().strip()
        if not port.isdigit():
            self.proc.kill()
            raise SystemExit("the local moto S3 server did not start")
        self.endpoint = f"http://127.0.0.1:{port}"
        super().__init__(self.endpoint)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client.list_buckets()
                break
            except Exception:  # noqa: BLE001 - not listening yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def __enter__(self) -> "LocalS3":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the server process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def bucket(self, name: str) -> str:  # a named bucket (the tests' helper picks a fresh name)
        self.client.create_bucket(Bucket=name)
        return name

    def tree(self, bucket: str, prefix: str) -> dict[str, bytes]:
        """Every object below ``prefix/`` (folder markers excluded), by its key relative to the prefix."""
        base = prefix.rstrip("/") + "/"
        return {k[len(base):]: self.get(bucket, k) for k in self.keys(bucket, base) if not k.endswith("/")}


def local_tree(root: Path) -> dict[str, bytes]:
    """Every file below ``root``, by its relative path."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def outputs(tree: dict[str, bytes]) -> dict[str, bytes]:
    """The outputs of a tree: ``*.parquet`` files outside any ``_``-prefixed folder."""
    return {k: v for k, v in tree.items()
            if k.endswith(".parquet") and not any(part.startswith("_") for part in k.split("/"))}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The benchmarks' ``--help``: the module docstring as written; each option's default where it has one and its
    help names none."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


def add_archive_args(ap: argparse.ArgumentParser, rows: int, shards: int) -> None:
    """The generated archive's options, the same in every storage benchmark."""
    ap.add_argument("--rows", type=int, default=rows, help="documents in the generated archive")
    ap.add_argument("--kind", default="mixed", choices=["mixed", "long"],
                    help="mixed: mostly short snippets with some long documents; long: whole documentation files")
    ap.add_argument("--shards", type=int, default=shards, help="input files")
    ap.add_argument("--row-group-size", type=int, default=1000, help="rows per row group of the input files")


def emit_json(result: dict, out: str | None) -> None:
    """The result as JSON: to ``out`` when given, else on stdout."""
    text = json.dumps(result, indent=2)
    if out:
        Path(out).write_text(text + "\n")
    else:
        print(text)
