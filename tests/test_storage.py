"""deepseg.storage on local paths (object stores: tests/jobs/test_s3.py, on a real S3 server)."""

from __future__ import annotations

import os

import pyarrow.fs as pafs
import pytest

from deepseg import storage
from deepseg.locations import join


def test_join_keeps_uris_intact():
    assert join("s3a://bucket/root/", "models", "v1") == "s3a://bucket/root/models/v1"
    assert join("/data/root", "models", "v1") == "/data/root/models/v1"
    assert storage.is_remote("s3a://b/x") and storage.is_remote("abfss://c@a.dfs.core.windows.net/x")
    assert not storage.is_remote("/tmp/x") and not storage.is_remote("file:/tmp/x") and not storage.is_remote("dbfs:/x")


def test_local_locations_resolve_to_the_local_file_system(tmp_path):
    for location, expected in ((str(tmp_path), str(tmp_path)), (f"file://{tmp_path}", str(tmp_path)),
                               (f"file:{tmp_path}", str(tmp_path)), ("dbfs:/mnt/x", "/dbfs/mnt/x")):
        fs, path = storage.resolve(location)
        assert isinstance(fs, pafs.LocalFileSystem) and path == expected
    fs, path = storage.resolve("s3a://bucket/a/b/")
    assert isinstance(fs, pafs.S3FileSystem) and path == "bucket/a/b"
    with pytest.raises(storage.StorageError, match="unsupported URI scheme 'ftp'"):
        storage.resolve("ftp://host/x")


def test_files_and_folders(tmp_path):
    root = str(tmp_path / "root")
    assert storage.list_dir(root) == [] and not storage.exists(root)
    storage.write_text(join(root, "a", "one.txt"), "1")
    storage.write_bytes(join(root, "b.bin"), b"\0")
    assert storage.list_dir(root) == ["a", "b.bin"] and storage.is_dir(join(root, "a"))
    assert storage.read_text(join(root, "a", "one.txt")) == "1"
    assert oct(os.stat(join(root, "b.bin")).st_mode & 0o777) == "0o644"
    storage.copy_tree(root, str(tmp_path / "copy"))
    assert storage.read_bytes(str(tmp_path / "copy" / "b.bin")) == b"\0"
    with storage.local_copy(root) as local:
        assert str(local) == root
    storage.remove_tree(join(root, "a"))
    assert storage.list_dir(root) == ["b.bin"]
    storage.remove_tree(join(root, "a"))  # absent: nothing to do
    with pytest.raises(FileNotFoundError, match="no file at"):
        storage.read_bytes(join(root, "a", "one.txt"))


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "model.json"
    storage.write_text(str(target), "old")

    def broken(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(storage.os, "replace", broken)
    with pytest.raises(OSError, match="disk gone"):
        storage.write_text(str(target), "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["model.json"]


def test_s3_settings_come_from_the_environment_without_spark(monkeypatch):
    monkeypatch.setattr(storage, "_s3a_settings", dict)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    storage._s3_filesystem.cache_clear()
    calls = []
    monkeypatch.setattr(storage, "_s3_filesystem", lambda **options: calls.append(options) or "fs")
    assert storage.resolve("s3a://bucket/x") == ("fs", "bucket/x")
    assert calls == [{"region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
                      "endpoint_override": "127.0.0.1:9", "scheme": "http"}]
