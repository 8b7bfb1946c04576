"""Files where the data lives: a local path or a URI (``s3a://``, ``abfss://``, ``gs://``, ...).

Every artefact deepseg writes besides Delta tables -- model versions, training checkpoints, the
fitted feature pipeline, the run report, survey models, CSV exports -- goes through this module,
built on ``pyarrow.fs``. Why pyarrow rather than Hadoop's FileSystem through the JVM: pyarrow is
already a dependency, it speaks S3, GCS, ABFS and HDFS without a JVM (so the in-memory estimator
saves to S3 as well as the Spark jobs do), and it needs no Spark session. Why not fsspec: it would
add one package per store (s3fs, adlfs, gcsfs) for what pyarrow's wheels already carry.

Object stores have no atomic rename, so nothing here relies on one. A file is written whole or not
at all (:func:`write_bytes`: a local temporary file renamed over the target; on an object store a
single PUT, which is atomic). A folder is published by writing its completion marker last;
readers ignore folders without it.

S3 settings come from the active Spark session's ``spark.hadoop.fs.s3a.*`` (endpoint, access and
secret key, session token, path style, SSL), else from the environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL``, ``AWS_REGION``), so the
jobs and Spark read the same bucket with the same credentials. Secrets are never logged.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.fs as pafs

__all__ = ["StorageError", "check_access", "copy_tree", "exists", "is_dir", "is_remote", "list_dir",
           "local_copy", "makedirs", "read_bytes", "read_text", "remove_tree", "resolve",
           "write_bytes", "write_text"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://?")
#: Hadoop's S3A settings (``fs.s3a.<key>``) that the S3 file system takes from Spark.
_S3A_KEYS = ("endpoint", "access.key", "secret.key", "session.token", "path.style.access",
             "connection.ssl.enabled", "endpoint.region")


class StorageError(OSError):
    """A location cannot be reached: missing bucket, refused credentials, unknown scheme."""


def is_remote(location: str | os.PathLike) -> bool:
    """True for a URI other than ``file:``: a location that must not go through local file APIs."""
    match = _SCHEME.match(os.fspath(location))
    return bool(match) and match.group(1).lower() not in ("file", "dbfs")


# --------------------------------------------------------------------------- file systems
def _local(location: str) -> str:
    """A ``file:``/``dbfs:`` URI or a path as a local path (``dbfs:/x`` is ``/dbfs/x`` on Databricks)."""
    if location.startswith("dbfs:"):
        return "/dbfs/" + location[len("dbfs:"):].lstrip("/")
    if location.startswith("file:"):
        location = location[len("file:"):]
        if location.startswith("//"):
            location = location[2:]
    return str(Path(location).expanduser().absolute())


def resolve(location: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """The pyarrow file system holding `location`, and the path within it."""
    location = os.fspath(location)
    match = _SCHEME.match(location)
    scheme = match.group(1).lower() if match else "file"
    if scheme in ("file", "dbfs"):
        return pafs.LocalFileSystem(), _local(location)
    parts = urlsplit(location)
    if scheme in ("s3a", "s3", "s3n"):
        return _s3(parts.netloc), f"{parts.netloc}{parts.path}".rstrip("/")
    if scheme in ("gs", "gcs", "abfs", "abfss", "hdfs", "viewfs"):
        try:
            fs, path = pafs.FileSystem.from_uri(location)
        except Exception as e:
            raise StorageError(f"cannot open {location!r}: {e}") from None
        return fs, path.rstrip("/")
    raise StorageError(f"unsupported URI scheme {scheme!r} in {location!r}")


def _s3a_settings() -> dict[str, str]:
    """``fs.s3a.*`` from the active Spark session's Hadoop configuration ({} without one)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        return {}
    spark = SparkSession.getActiveSession()
    if spark is None:
        return {}
    try:
        conf = spark.sparkContext._jsc.hadoopConfiguration()
    except Exception:  # a Spark Connect session has no JVM here: the environment applies
        return {}
    return {key: value for key in _S3A_KEYS if (value := conf.get(f"fs.s3a.{key}")) is not None}


def _s3(bucket: str) -> pafs.S3FileSystem:
    settings = _s3a_settings()
    options: dict = {"region": settings.get("endpoint.region") or os.environ.get("AWS_REGION")
                     or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
    endpoint = settings.get("endpoint") or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        url = urlsplit(endpoint if "://" in endpoint else "//" + endpoint)
        ssl = settings.get("connection.ssl.enabled", "true").lower() != "false"
        options["endpoint_override"] = url.netloc
        options["scheme"] = url.scheme or ("https" if ssl else "http")
    if settings.get("path.style.access", "").lower() == "true":
        options["force_virtual_addressing"] = False
    if settings.get("access.key") and settings.get("secret.key"):
        options.update(access_key=settings["access.key"], secret_key=settings["secret.key"],
                       session_token=settings.get("session.token"))
    return _s3_filesystem(**options)


@functools.lru_cache(maxsize=16)
def _s3_filesystem(**options) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(**{k: v for k, v in options.items() if v is not None})


# --------------------------------------------------------------------------- checks
def check_access(location: str | os.PathLike, what: str = "location") -> None:
    """Refuse `location` when its bucket is missing or its credentials are refused -- before
    anything is written. The message names the bucket and the settings to check, never a secret."""
    location = os.fspath(location)
    if not is_remote(location):
        return
    fs, path = resolve(location)
    bucket = path.split("/", 1)[0]
    try:
        info = fs.get_file_info(bucket)
    except OSError as e:
        text = str(e)
        if re.search(r"ACCESS_DENIED|InvalidAccessKeyId|SignatureDoesNotMatch|403|Forbidden", text, re.I):
            raise StorageError(
                f"{what} {location}: access to bucket {bucket!r} was refused; check the credentials "
                f"(spark.hadoop.fs.s3a.access.key / secret.key, or AWS_ACCESS_KEY_ID / "
                f"AWS_SECRET_ACCESS_KEY)") from None
        raise StorageError(f"{what} {location}: bucket {bucket!r} cannot be reached: "
                           f"{text.splitlines()[0] if text else type(e).__name__}") from None
    if info.type == pafs.FileType.NotFound:
        raise StorageError(f"{what} {location}: bucket {bucket!r} does not exist; create it first")


# --------------------------------------------------------------------------- files
def exists(location: str | os.PathLike) -> bool:
    fs, path = resolve(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_dir(location: str | os.PathLike) -> bool:
    fs, path = resolve(location)
    return fs.get_file_info(path).type == pafs.FileType.Directory


def list_dir(location: str | os.PathLike) -> list[str]:
    """Names directly under `location`, sorted ([] when it does not exist)."""
    fs, path = resolve(location)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(info.base_name for info in infos)


def makedirs(location: str | os.PathLike) -> None:
    fs, path = resolve(location)
    fs.create_dir(path, recursive=True)


def read_bytes(location: str | os.PathLike) -> bytes:
    fs, path = resolve(location)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(f"no file at {os.fspath(location)}")
    with fs.open_input_stream(path) as f:
        return f.read()


def read_text(location: str | os.PathLike) -> str:
    return read_bytes(location).decode("utf-8")


def write_bytes(location: str | os.PathLike, data: bytes, mode: int = 0o644) -> str:
    """Write `data` to `location` whole or not at all (see the module docstring)."""
    location = os.fspath(location)
    fs, path = resolve(location)
    if isinstance(fs, pafs.LocalFileSystem):
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)  # mkstemp makes it private
            os.replace(tmp, target)
            _fsync_directory(target.parent)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return location
    with fs.open_output_stream(path) as f:  # one PUT: the object appears whole, or not at all
        f.write(data)
    return location


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text(location: str | os.PathLike, text: str) -> str:
    return write_bytes(location, text.encode("utf-8"))


def remove_tree(location: str | os.PathLike) -> None:
    """Delete `location` and everything under it (nothing when absent)."""
    fs, path = resolve(location)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif info.type == pafs.FileType.File:
        fs.delete_file(path)


def copy_tree(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Copy the folder `source` to `destination`, across file systems (local <-> object store)."""
    src_fs, src = resolve(source)
    dst_fs, dst = resolve(destination)
    if isinstance(dst_fs, pafs.LocalFileSystem):
        Path(dst).mkdir(parents=True, exist_ok=True)
    pafs.copy_files(src, dst, source_filesystem=src_fs, destination_filesystem=dst_fs)


@contextlib.contextmanager
def local_copy(location: str | os.PathLike) -> Iterator[Path]:
    """`location` as a local folder: itself when local, else a temporary download of it."""
    location = os.fspath(location)
    if not is_remote(location):
        yield Path(_local(location))
        return
    with tempfile.TemporaryDirectory(prefix="deepseg-") as tmp:
        target = Path(tmp) / uuid.uuid4().hex[:8]
        copy_tree(location, target)
        yield target
