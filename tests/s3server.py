"""A real S3-compatible server on loopback for the tests: S3Proxy with its filesystem backend.

S3Proxy (``org.gaul:s3proxy`` on Maven Central, its ``jar-with-dependencies``) is downloaded once
into ``~/.cache/deepseg-test`` and checked against Central's SHA-1; it runs on the JVM that Spark
needs anyway. It speaks the S3 REST API with AWS signature checks, so Hadoop's S3A connector,
pyarrow and delta-rs talk to it exactly as to a cloud bucket (no in-process mock).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

S3PROXY_VERSION = "4.1.0"
_CENTRAL = "https://repo1.maven.org/maven2/org/gaul/s3proxy"
CACHE = Path(os.environ.get("DEEPSEG_TEST_CACHE", Path.home() / ".cache" / "deepseg-test"))

ACCESS_KEY = "deepseg-test"
SECRET_KEY = "s3cr3t-deepseg-test-key"


def s3proxy_jar() -> Path:
    """The S3Proxy jar, downloaded from Maven Central on first use (SHA-1 checked)."""
    jar = CACHE / f"s3proxy-{S3PROXY_VERSION}.jar"
    if jar.is_file():
        return jar
    CACHE.mkdir(parents=True, exist_ok=True)
    url = f"{_CENTRAL}/{S3PROXY_VERSION}/s3proxy-{S3PROXY_VERSION}-jar-with-dependencies.jar"
    with urllib.request.urlopen(url + ".sha1", timeout=60) as r:
        expected = r.read().decode().split()[0][:40]
    tmp = jar.with_suffix(".part")
    with urllib.request.urlopen(url, timeout=600) as r, open(tmp, "wb") as f:
        shutil.copyfileobj(r, f)
    actual = hashlib.sha1(tmp.read_bytes()).hexdigest()
    if actual != expected:
        tmp.unlink()
        raise RuntimeError(f"{url}: SHA-1 {actual}, Maven Central says {expected}")
    tmp.replace(jar)
    return jar


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class S3Server:
    """A running S3Proxy: its endpoint and the credentials it accepts."""

    endpoint: str
    folder: Path
    process: subprocess.Popen
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    def env(self, **overrides) -> dict:
        """Process environment with this server's credentials (as AWS_* variables)."""
        return {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_REGION": "us-east-1", **overrides}

    def spark_conf(self) -> dict:
        """Spark settings that point S3A at this server (no secrets: those come from the environment)."""
        return {"spark.hadoop.fs.s3a.endpoint": self.endpoint,
                "spark.hadoop.fs.s3a.path.style.access": "true",
                "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
                "spark.hadoop.fs.s3a.endpoint.region": "us-east-1"}

    def filesystem(self):
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(access_key=self.access_key, secret_key=self.secret_key, region="us-east-1",
                                 endpoint_override=self.endpoint.split("://", 1)[1], scheme="http",
                                 allow_bucket_creation=True, allow_bucket_deletion=True)

    def create_bucket(self, name: str) -> str:
        self.filesystem().create_dir(name)
        return name

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start(folder: Path) -> S3Server:
    """Start S3Proxy on a free loopback port, storing objects under `folder`."""
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("java is not on the PATH (Spark needs it too)")
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    (folder / "data").mkdir(parents=True, exist_ok=True)
    properties = folder / "s3proxy.properties"
    properties.write_text("\n".join([
        f"s3proxy.endpoint={endpoint}",
        "s3proxy.authorization=aws-v2-or-v4",
        f"s3proxy.identity={ACCESS_KEY}",
        f"s3proxy.credential={SECRET_KEY}",
        "jclouds.provider=filesystem-nio2",
        f"jclouds.filesystem.basedir={folder / 'data'}",
    ]) + "\n")
    log = open(folder / "s3proxy.log", "wb")
    process = subprocess.Popen([java, "-Xmx256m", "-jar", str(s3proxy_jar()), "--properties", str(properties)],
                               stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"S3Proxy exited ({process.returncode}): {(folder / 's3proxy.log').read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return S3Server(endpoint, folder, process)
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"S3Proxy did not listen on {endpoint} within 60 s")
