"""Where tables and artefacts live: a catalog table name, a URI, or a local path.

A ``data.tables`` entry is one of

* a location: a URI of one of :data:`URI_SCHEMES` (``s3a://bucket/t``, ``abfss://...``,
  ``dbfs:/...``) or an absolute path (``/Volumes/main/deepseg/data/t``);
* a catalog name: ``schema.table`` or ``catalog.schema.table`` (Unity Catalog, a Hive metastore);
  each part a plain identifier or backtick-quoted (letters, digits, ``_``, ``-``, spaces);
* a bare name: a catalog table in ``data.catalog``/``data.schema`` when a schema is set, else a
  folder under ``data.root``.

Names come back with every part quoted, so they can be spliced into SQL; nothing here touches
Spark or a file system.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

__all__ = ["TABLE_NAME", "URI_SCHEMES", "Table", "check_location", "join", "parse_table"]

#: One part of a catalog table name: a plain identifier, or backticks around letters, digits, ``_``,
#: ``-`` and spaces (never a backtick: nothing can close the quote early).
_NAME_PART = r"(?:[A-Za-z_][A-Za-z0-9_]*|`[A-Za-z0-9_\- ]+`)"
#: ``table``, ``schema.table`` or ``catalog.schema.table``.
TABLE_NAME = re.compile(rf"{_NAME_PART}(?:\.{_NAME_PART}){{0,2}}")
#: URI schemes a table or ``data.root`` may use: Hadoop file systems Spark reads Delta from.
URI_SCHEMES = ("s3a", "s3", "abfss", "abfs", "gs", "dbfs", "file", "hdfs")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


@dataclasses.dataclass(frozen=True)
class Table:
    """Where a Delta table lives: a catalog ``name`` (each part backtick-quoted, safe to splice
    into SQL) or a ``path`` (a local path or a URI) -- exactly one of them."""

    name: str | None = None
    path: str | None = None

    def __str__(self) -> str:
        return self.name or self.path or ""


def join(root: str, *names: str) -> str:
    """`names` under `root`: a URI is joined with "/" (``Path`` would turn ``s3a://b`` into ``s3a:/b``)."""
    root = str(root)
    if _SCHEME.match(root):
        return "/".join([root.rstrip("/"), *(name.strip("/") for name in names)])
    return str(Path(root, *names))


def check_location(value: str) -> None:
    """Refuse a URI of an unsupported scheme. Errors start with ": " so that the caller can put
    the configuration key in front."""
    match = _SCHEME.match(value)
    if match and match.group(1).lower() not in URI_SCHEMES:
        raise ValueError(f": unsupported URI scheme {match.group(1)!r} in {value!r}; "
                         f"use one of {', '.join(URI_SCHEMES)} (or a local path)")
    if match and not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:/", value):
        raise ValueError(f": {value!r} is not a URI (<scheme>://<bucket>/<path>) nor a path")


def parse_table(entry, root: str, catalog: str | None = None, schema: str | None = None) -> Table:
    """The :class:`Table` a ``data.tables`` entry names (see the module docstring)."""
    if not isinstance(entry, str) or not entry:
        raise ValueError(f" must be a table name or location, got {entry!r}")
    if _SCHEME.match(entry) or entry.startswith("/"):
        check_location(entry)
        return Table(path=entry)
    if not TABLE_NAME.fullmatch(entry):
        raise ValueError(f" must be a location (a URI of {'|'.join(URI_SCHEMES)}, or an absolute path) or a "
                         f"table name: table, schema.table or catalog.schema.table, each part an identifier "
                         f"or `quoted` (letters, digits, _, -, space); got {entry!r}")
    parts = [part.strip("`") for part in re.findall(_NAME_PART, entry)]
    if len(parts) == 1 and schema is None:
        return Table(path=join(root, parts[0]))
    if len(parts) == 1:
        parts = [p for p in (catalog, schema) if p] + parts
    return Table(name=".".join(f"`{part}`" for part in parts))
