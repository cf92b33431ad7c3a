"""The one downloader: Hub weights and dataset URLs, streamed, resumable, verified, cached.

Every download goes to a `.part` file beside its target (resumed with an HTTP Range request after
a broken transfer), is checked against the size and sha256 the server announces, and is renamed
into place only then; a lock keeps parallel jobs of a sweep from writing the same file.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urljoin, urlparse

import requests
import urllib3
from filelock import FileLock
from tqdm import tqdm

from lit_sft.errors import InvalidInput, UserError
from lit_sft.files import cache_root

DEFAULT_HUB_URL = "https://huggingface.co"
WEIGHTS_FILENAME = "model.safetensors"
WEIGHTS_HINT = "pass a local file instead: model.weights=/path/to/model.safetensors"
DATA_HINT = "pass a local file instead: data.path=/path/to/data.json"

_TIMEOUT_S = (10, 60)  # (connect, read between two chunks)
_CHUNK_BYTES = 1 << 20
_MAX_RELATIVE_REDIRECTS = 5
_REPO_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class DownloadError(UserError, RuntimeError):
    """A file could not be downloaded, or what arrived failed verification."""


def is_remote(path: str) -> bool:
    """Whether `path` is an http(s) URL rather than a local file."""
    return path.startswith(("http://", "https://"))


def hub_file_url(
    repo: str, filename: str = WEIGHTS_FILENAME, base_url: str = DEFAULT_HUB_URL
) -> str:
    """URL of `filename` on the main branch of the Hub repository `repo`."""
    return f"{base_url.rstrip('/')}/{repo}/resolve/main/{filename}"


def default_cache_dir() -> Path:
    """The `hub/` folder of lit_sft's cache (see `lit_sft.files.cache_root`)."""
    return cache_root() / "hub"


def download_hub_weights(
    repo: str,
    *,
    cache_dir: str | Path | None = None,
    base_url: str = DEFAULT_HUB_URL,
    progress: bool = True,
) -> Path:
    """Path of `repo`'s model.safetensors in the cache, downloaded and verified if not there."""
    if not _REPO_ID.fullmatch(repo) or ".." in repo:
        raise InvalidInput(
            f"not a Hub repository id: {repo!r}, in model.hub_repo; use e.g. openai-community/gpt2"
        )
    target = Path(cache_dir or default_cache_dir()).expanduser() / repo / WEIGHTS_FILENAME
    url = hub_file_url(repo, WEIGHTS_FILENAME, base_url)
    hint = f"is model.hub_repo right? To use a file you have, {WEIGHTS_HINT}"
    return download(url, target, hint=hint, progress=progress, desc=repo)


def local_copy(url: str, cache_dir: str | Path | None = None, *, progress: bool = True) -> Path:
    """The cached copy of a dataset at `url`, downloaded on first use."""
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "data"
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    target = folder / f"{digest}-{Path(url.split('?')[0]).name or 'data'}"
    return download(url, target, hint=DATA_HINT, progress=progress, desc=target.name)


def download(url: str, target: Path, *, hint: str, progress: bool = True, desc: str = "") -> Path:
    """`target`, downloaded from `url` and verified unless it is already there.

    `hint` tells the user what to do instead when the download fails.
    """
    # Only verified files are ever renamed into place, so one that exists needs no request;
    # checked before taking the lock so that a read-only, pre-filled cache works.
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.with_name(target.name + ".lock")):
        if target.is_file():  # another process finished it while we waited
            return target
        part = target.with_name(target.name + ".part")
        try:
            with requests.Session() as session:
                size, sha256 = _remote_file_info(session, url)
                size = _fetch_to_part(session, url, part, size, progress=progress, desc=desc)
        except requests.RequestException as exc:
            raise _download_error(url, part, exc, hint) from exc
        _verify_or_delete(part, url, size, sha256)
        os.replace(part, target)
    return target


def _download_error(
    url: str, part: Path, exc: requests.RequestException, hint: str
) -> DownloadError:
    """An error for a failed request that says what happened and what to do next."""
    if isinstance(exc, requests.HTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        return DownloadError(f"{url} answered HTTP {status}; {hint}")
    message = f"could not download {url} ({type(exc).__name__}: {exc})"
    kept = part.stat().st_size if part.exists() else 0
    if kept:
        message += f"; the {kept} bytes received are kept in {part} and the next run resumes"
    return DownloadError(f"{message}. Without network access, {hint}")


def _remote_file_info(session: requests.Session, url: str) -> tuple[int | None, str | None]:
    """(size, sha256) the Hub announces for `url`; either is None where it says nothing."""
    # The Hub answers a HEAD on an LFS file with a redirect to its CDN that carries the file's
    # size and sha256 in X-Linked-Size / X-Linked-Etag, so redirects are not followed here,
    # except relative ones (a renamed repository) that stay on the Hub.
    headers = {"Accept-Encoding": "identity"}
    response = session.head(url, headers=headers, allow_redirects=False, timeout=_TIMEOUT_S)
    for _ in range(_MAX_RELATIVE_REDIRECTS):
        location = response.headers.get("Location", "")
        if not (response.is_redirect and location and not urlparse(location).netloc):
            break
        url = urljoin(url, location)
        response = session.head(url, headers=headers, allow_redirects=False, timeout=_TIMEOUT_S)
    if response.status_code in (405, 501):  # a server without HEAD: the GET tells the size
        return None, None
    response.raise_for_status()
    size = response.headers.get("X-Linked-Size")
    if size is None and not response.is_redirect:
        size = response.headers.get("Content-Length")
    etag = response.headers.get("X-Linked-Etag") or response.headers.get("ETag") or ""
    etag = etag.removeprefix("W/").strip('"').lower()
    # Non-LFS files carry a git sha1 as ETag; only a 64-digit hex is an LFS sha256.
    sha256 = etag if _SHA256_HEX.fullmatch(etag) else None
    return (int(size) if size is not None else None), sha256


def _fetch_to_part(
    session: requests.Session,
    url: str,
    part: Path,
    size: int | None,
    *,
    progress: bool,
    desc: str,
) -> int | None:
    """Appends the rest of `url` to `part`, resuming with a Range request; returns the size."""
    start = part.stat().st_size if part.exists() else 0
    if size is None or start > size:  # the .part cannot be, or is not, a prefix of this file
        start = 0
    elif start == size:
        return size
    headers = {"Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    with session.get(url, headers=headers, stream=True, timeout=_TIMEOUT_S) as response:
        response.raise_for_status()
        if start and response.status_code != 206:  # the server ignored Range: start over
            start = 0
        if size is None and "Content-Length" in response.headers:
            size = int(response.headers["Content-Length"])
        bar = tqdm(
            total=size,
            initial=start,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=desc,
            disable=not progress,
        )
        with bar, open(part, "ab" if start else "wb") as out:
            _copy_body(response, out, bar)
    return size


def _copy_body(response: requests.Response, out: BinaryIO, bar: tqdm) -> None:
    """Streams the body of `response` into `out`, writing every byte that arrives."""
    # The raw stream, undecoded: requests' iter_content drops a partly filled chunk when the
    # connection breaks, and those bytes would then be fetched again. Accept-Encoding is
    # identity, so raw bytes are the file; a server that compresses anyway fails verification.
    try:
        for chunk in response.raw.stream(_CHUNK_BYTES, decode_content=False):
            out.write(chunk)
            bar.update(len(chunk))
    except urllib3.exceptions.HTTPError as exc:
        raise requests.ConnectionError(exc, response=response) from exc


def _verify_or_delete(part: Path, url: str, size: int | None, sha256: str | None) -> None:
    """Checks `part` against the announced size and sha256; deletes it if either differs."""
    actual_size = part.stat().st_size
    problem = None
    if size is not None and actual_size != size:
        problem = f"{actual_size} bytes arrived, {size} announced"
    elif sha256 is not None and (actual := _sha256_of(part)) != sha256:
        problem = f"sha256 {actual} does not match the announced {sha256}"
    if problem:
        part.unlink()
        raise DownloadError(f"download of {url} is corrupt ({problem}); deleted it")


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
