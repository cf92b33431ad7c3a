"""Downloads: Hub files through huggingface_hub, dataset URLs through a resumable downloader.

Hub files (pretrained weights, `hf://` datasets) live in the standard Hugging Face cache and follow
its variables (`HF_HUB_CACHE`, `HF_HUB_OFFLINE`, `HF_ENDPOINT`, `HF_TOKEN`); huggingface_hub checks
their size and locks parallel downloads, lit_sft checks an LFS file's sha256. A plain http(s) URL
goes to a `.part` file beside its target (resumed with an HTTP Range request after a broken
transfer) and is renamed into place once all the bytes the server announced have arrived; a lock
keeps the jobs of a sweep from writing the same file.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import requests
import urllib3
from filelock import FileLock
from huggingface_hub import constants, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from tqdm import tqdm

from lit_sft.errors import InvalidInput, UserError
from lit_sft.files import cache_root

WEIGHTS_FILENAME = "model.safetensors"
WEIGHTS_HINT = "pass a local file instead: model.weights=/path/to/model.safetensors"
DATA_HINT = "pass a local file instead: data.path=/path/to/data.json"

_TIMEOUT_S = (10, 60)  # (connect, read between two chunks)
_CHUNK_BYTES = 1 << 20
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# hf://datasets/<owner>/<repo>[@<revision>]/<file>, the syntax of huggingface_hub's HfFileSystem.
_HUB_PATH = re.compile(r"hf://datasets/(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<rev>[^/]+))?/(?P<file>.+)")


class DownloadError(UserError, RuntimeError):
    """A file could not be downloaded, or what arrived failed verification."""


@dataclass(frozen=True)
class HubFile:
    """One file of a Hub repository at a revision (None: the default branch)."""

    repo_id: str
    filename: str
    repo_type: str = "model"
    revision: str | None = None

    def __str__(self) -> str:
        at = f"@{self.revision}" if self.revision else ""
        kind = "" if self.repo_type == "model" else f"{self.repo_type}s/"
        return f"hf://{kind}{self.repo_id}{at}/{self.filename}"


def is_remote(path: str) -> bool:
    """Whether `path` is an http(s) URL or an `hf://` Hub path rather than a local file."""
    return path.startswith(("http://", "https://", "hf://"))


def parse_hub_path(path: str) -> HubFile:
    """The dataset file named by `hf://datasets/<owner>/<repo>[@<revision>]/<file>`."""
    match = _HUB_PATH.fullmatch(path)
    if match is None:
        raise InvalidInput(
            f"not a Hub dataset path: {path!r} "
            "(expected hf://datasets/<owner>/<repo>/<file>, optionally <repo>@<revision>)"
        )
    return HubFile(match["repo"], match["file"], "dataset", match["rev"])


def hub_download(
    file: HubFile, *, hint: str, cache_dir: str | Path | None = None, endpoint: str | None = None
) -> Path:
    """The cached copy of `file` in the Hugging Face cache, downloaded and verified if not there.

    `cache_dir` None is huggingface_hub's (`$HF_HUB_CACHE`, `~/.cache/huggingface/hub`),
    `endpoint` None is `$HF_ENDPOINT` or huggingface.co. `hint` says what to do instead when the
    download fails.
    """
    kwargs = {
        "repo_id": file.repo_id,
        "filename": file.filename,
        "repo_type": file.repo_type,
        "revision": file.revision,
        "cache_dir": cache_dir,
        "endpoint": endpoint,
    }
    # A file in the cache is used without asking the Hub whether the branch moved: a sweep's runs
    # then never wait on the network, and `model.revision` pins a commit for those who want one.
    try:
        return Path(hf_hub_download(**kwargs, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    if constants.is_offline_mode():
        cache = cache_dir or constants.HF_HUB_CACHE
        raise DownloadError(
            f"{file} is not in the Hugging Face cache {cache} and HF_HUB_OFFLINE is set; "
            f"unset HF_HUB_OFFLINE to download it, or {hint}"
        )
    try:
        path = Path(hf_hub_download(**kwargs))
    except LocalEntryNotFoundError as exc:  # a subclass of EntryNotFoundError: no answer at all
        raise _unreachable(file, endpoint, hint, exc) from exc
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as exc:
        private = " (a private or gated repository needs HF_TOKEN)"
        reason = type(exc).__name__ + (private if isinstance(exc, RepositoryNotFoundError) else "")
        raise DownloadError(
            f"{file} is not on the Hub: {reason}; check the repository, revision and file name, "
            f"or {hint}"
        ) from exc
    except (HfHubHTTPError, OSError) as exc:
        raise _unreachable(file, endpoint, hint, exc) from exc
    _verify_lfs_blob(path, file)
    return path


def _unreachable(file: HubFile, endpoint: str | None, hint: str, exc: Exception) -> DownloadError:
    where = endpoint or constants.ENDPOINT
    cause = exc.__cause__ or exc
    return DownloadError(
        f"could not download {file} from {where} ({type(cause).__name__}: {cause}). "
        f"Without network access, {hint}"
    )


def _verify_lfs_blob(path: Path, file: HubFile) -> None:
    """Checks a freshly downloaded LFS file against its sha256; deletes it if they differ."""
    # huggingface_hub checks the size only. It names an LFS blob by the sha256 the Hub announced
    # (X-Linked-Etag); other files are named by their git sha1, and copies (no symlinks) by
    # nothing useful, so those are not checked.
    blob = Path(os.path.realpath(path))
    if not _SHA256_HEX.fullmatch(blob.name) or (actual := _sha256_of(blob)) == blob.name:
        return
    blob.unlink()
    path.unlink(missing_ok=True)
    raise DownloadError(
        f"download of {file} is corrupt (sha256 {actual} does not match the Hub's {blob.name}); "
        "deleted it, run again to download it again"
    )


def local_copy(path: str, cache_dir: str | Path | None = None, *, progress: bool = True) -> Path:
    """The cached copy of a dataset at an http(s) URL or `hf://` path, downloaded on first use."""
    if path.startswith("hf://"):
        return hub_download(parse_hub_path(path), hint=DATA_HINT, cache_dir=cache_dir)
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "data"
    digest = hashlib.sha256(path.encode()).hexdigest()[:16]
    target = folder / f"{digest}-{Path(path.split('?')[0]).name or 'data'}"
    return download(path, target, hint=DATA_HINT, progress=progress, desc=target.name)


def download(url: str, target: Path, *, hint: str, progress: bool = True, desc: str = "") -> Path:
    """`target`, downloaded from the http(s) `url` unless it is already there.

    `hint` tells the user what to do instead when the download fails.
    """
    # Only complete files are ever renamed into place, so one that exists needs no request;
    # checked before taking the lock so that a read-only, pre-filled cache works.
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.with_name(target.name + ".lock")):
        if target.is_file():  # another process finished it while we waited
            return target
        part = target.with_name(target.name + ".part")
        try:
            _fetch_to_part(url, part, progress=progress, desc=desc)
        except requests.RequestException as exc:
            raise _download_error(url, part, exc, hint) from exc
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


def _fetch_to_part(url: str, part: Path, *, progress: bool, desc: str) -> None:
    """Appends the rest of `url` to `part`, resuming with a Range request."""
    start = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    with requests.get(url, headers=headers, stream=True, timeout=_TIMEOUT_S) as response:
        if response.status_code == 416:  # the .part is not a prefix of this file: start over
            part.unlink()
            _fetch_to_part(url, part, progress=progress, desc=desc)
            return
        response.raise_for_status()
        if response.status_code != 206:  # no Range asked, or the server ignored it
            start = 0
        length = response.headers.get("Content-Length")
        size = start + int(length) if length is not None else None
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


def _copy_body(response: requests.Response, out: BinaryIO, bar: tqdm) -> None:
    """Streams the body of `response` into `out`, writing every byte that arrives."""
    # The raw stream, undecoded: requests' iter_content drops a partly filled chunk when the
    # connection breaks, and those bytes would then be fetched again. Accept-Encoding is
    # identity, so raw bytes are the file. urllib3 raises when fewer bytes arrive than the
    # Content-Length announced, so a short transfer stays a .part.
    try:
        for chunk in response.raw.stream(_CHUNK_BYTES, decode_content=False):
            out.write(chunk)
            bar.update(len(chunk))
    except urllib3.exceptions.HTTPError as exc:
        raise requests.ConnectionError(exc, response=response) from exc


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
