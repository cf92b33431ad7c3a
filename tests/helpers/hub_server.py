"""A local stand-in for the Hugging Face Hub (as huggingface_hub 2.x talks to it) and web servers.

Point huggingface_hub at it with `endpoint=server.url` or `HF_ENDPOINT=<server.url>`. Uploads
(`create_repo`, `upload_folder`) land in `repos` as regular files, and each commit in `commits`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from huggingface_hub import constants

AGENT_REGISTRY = "/api/agent-harnesses"
EMPTY_REGISTRY = b'{"standardEnvVars": [], "harnesses": {}}'


@dataclass
class LoggedRequest:
    """One request the server received."""

    method: str
    path: str
    range: str | None
    authorization: str | None = None


@dataclass
class HostedFile:
    """A file the server hosts; LFS files are served from `/cdn/{sha256}`, as the Hub does."""

    data: bytes
    lfs: bool = True
    sha256: str = field(init=False)
    git_sha1: str = field(init=False)

    def __post_init__(self) -> None:
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.git_sha1 = hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()


@dataclass
class Commit:
    """One upload: the repository, its revision, the message and the files' paths."""

    repo: str
    revision: str
    summary: str
    paths: list[str]


def commit_of(repo: str, revision: str) -> str:
    """The (made-up, stable) commit hash a repository's revision points at."""
    return hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()


def set_hf_endpoint(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """What HF_ENDPOINT=url does, for a process that has imported huggingface_hub already."""
    # huggingface_hub reads HF_ENDPOINT once, at import, into these two constants.
    template = constants.HUGGINGFACE_CO_URL_TEMPLATE.replace(constants.ENDPOINT, url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(constants, "ENDPOINT", url)


class HubServer:
    """Serves `/[datasets/]{repo}/resolve/{revision}/{file}` as the Hub does, on 127.0.0.1.

    A HEAD or GET of an LFS file answers 302 to `cdn_url/cdn/{sha256}` with X-Repo-Commit,
    X-Linked-Size, X-Linked-Etag (its sha256) and ETag; a small (git) file answers 200 with its
    git sha1 as ETag.
    `{revision}` is a branch name the file was added under or that branch's commit hash. Unknown
    repositories, revisions and files answer 404 with the X-Error-Code the Hub sends.
    `token` set: Hub requests (not the CDN's, which get signed URLs) without
    `Authorization: Bearer <token>` answer 401.
    `add_static` serves plain URLs (no Hub headers), as a web server hosting a dataset would.
    Faults, for the next GETs of file bytes: `cut_after` (one transfer stops after that many
    bytes), `corrupt` (a flipped byte), `truncate_to` (a complete transfer of a shorter file),
    `ignore_range` (whole file with 200, as servers without range support answer).
    """

    def __init__(self) -> None:
        # "/{prefix}{repo}" -> revision -> filename -> file
        self.repos: dict[str, dict[str, dict[str, HostedFile]]] = {}
        self.static: dict[str, HostedFile] = {}
        self.requests: list[LoggedRequest] = []
        self.private: dict[str, bool] = {}  # repositories created through the API
        self.commits: list[Commit] = []
        self.token: str | None = None
        self.bytes_sent = 0
        self.cut_after: int | None = None
        self.corrupt = False
        self.truncate_to: int | None = None
        self.ignore_range = False
        self.lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def cdn_url(self) -> str:
        """The same server under another host name, as the Hub's CDN is another host."""
        return self.url.replace("127.0.0.1", "localhost")

    def add_file(
        self,
        repo: str,
        data: bytes,
        filename: str = "model.safetensors",
        *,
        revision: str = "main",
        repo_type: str = "model",
        lfs: bool = True,
    ) -> None:
        """Hosts `data` as `filename` of `repo` (a `repo_type` repository) at `revision`."""
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        revisions = self.repos.setdefault(f"/{prefix}{repo}", {})
        revisions.setdefault(revision, {})[filename] = HostedFile(data, lfs)

    def add_static(self, path: str, data: bytes) -> None:
        """Hosts `data` at `path` as a plain web server would (a dataset URL)."""
        self.static[path] = HostedFile(data)

    def lookup(self, path: str) -> tuple[int, str, HostedFile | str]:
        """(status, commit, file or X-Error-Code) for a `/{repo}/resolve/{rev}/{file}` path."""
        repo_path, sep, rest = path.partition("/resolve/")
        revisions = self.repos.get(repo_path) if sep else None
        if revisions is None:
            return 404, "", "RepoNotFound"
        revision, _, filename = rest.partition("/")
        repo = repo_path.removeprefix("/datasets").lstrip("/")
        by_commit = {commit_of(repo, r): r for r in revisions}
        revision = by_commit.get(revision, revision)
        if revision not in revisions:
            return 404, "", "RevisionNotFound"
        commit = commit_of(repo, revision)
        hosted = revisions[revision].get(filename)
        return (200, commit, hosted) if hosted else (404, commit, "EntryNotFound")

    def accept(self, path: str, body: bytes) -> tuple[int, dict]:
        """(status, JSON reply) of an upload API call: create a repository, commit files."""
        if path == "/api/repos/create":
            request = json.loads(body)
            repo = f"{request['organization'] or 'user'}/{request['name']}"
            if f"/{repo}" in self.repos:
                return 409, {
                    "error": "You already created this model repo",
                    "url": f"{self.url}/{repo}",
                }
            self.repos[f"/{repo}"] = {"main": {}}
            self.private[repo] = request.get("visibility") == "private"
            return 200, {"url": f"{self.url}/{repo}"}
        if path == "/api/validate-yaml":
            return 200, {"errors": [], "warnings": []}
        repo, _, rest = path.removeprefix("/api/models/").partition("/")
        name, _, rest = rest.partition("/")
        repo, (action, _, revision) = f"{repo}/{name}", rest.partition("/")
        if f"/{repo}" not in self.repos:
            return 404, {"error": "Repository not found"}
        if action == "preupload":
            paths = [f["path"] for f in json.loads(body)["files"]]
            return 200, {"files": [{"path": p, "uploadMode": "regular", "shouldIgnore": False}
                                   for p in paths]}  # fmt: skip
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        files = [line["value"] for line in lines if line["key"] == "file"]
        for file in files:
            self.add_file(repo, base64.b64decode(file["content"]), file["path"], lfs=False)
        self.commits.append(Commit(repo, revision, lines[0]["value"]["summary"],
                                   [f["path"] for f in files]))  # fmt: skip
        commit = commit_of(repo, revision)
        url = f"{self.url}/{repo}/commit/{commit}"
        return 200, {"commitUrl": url, "commitOid": commit, "pullRequestUrl": None}

    def _serve(self) -> None:
        # A short poll interval so that `stop` returns quickly.
        self._httpd.serve_forever(poll_interval=0.01)

    def start(self) -> HubServer:
        """Serves in a daemon thread until `stop`."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops serving and closes the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()


def _make_handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to `hub`."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._answer(send_body=False)

        def do_GET(self) -> None:
            self._answer(send_body=True)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"] or 0))
            auth = self.headers["Authorization"]
            with hub.lock:
                hub.requests.append(LoggedRequest("POST", self.path, None, auth))
            if hub.token is not None and auth != f"Bearer {hub.token}":
                status, reply = 401, {"error": "Invalid username or password."}
            else:
                status, reply = hub.accept(self.path.partition("?")[0], body)
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _answer(self, send_body: bool) -> None:
            if self.path == AGENT_REGISTRY:
                # huggingface_hub asks for this once per process before its first progress bar;
                # answered (empty) and left out of the log, so tests see only file requests.
                self._serve_bytes(HostedFile(EMPTY_REGISTRY), send_body)
                return
            auth = self.headers["Authorization"]
            with hub.lock:
                hub.requests.append(
                    LoggedRequest(self.command, self.path, self.headers["Range"], auth)
                )
            if self.path in hub.static:
                self._serve_bytes(hub.static[self.path], send_body)
                return
            by_sha = {
                f"/cdn/{f.sha256}": f
                for revisions in hub.repos.values()
                for files in revisions.values()
                for f in files.values()
            }
            if self.path in by_sha:
                self._serve_bytes(by_sha[self.path], send_body)
                return
            if hub.token is not None and auth != f"Bearer {hub.token}":
                self._send_empty(401, {"X-Error-Code": "RepoNotFound"})
                return
            status, commit, found = hub.lookup(self.path)
            if isinstance(found, str):
                headers = {"X-Error-Code": found}
                if commit:
                    headers["X-Repo-Commit"] = commit
                self._send_empty(status, headers)
            elif found.lfs:
                self._send_empty(
                    302,
                    {
                        "Location": f"{hub.cdn_url}/cdn/{found.sha256}",
                        "X-Repo-Commit": commit,
                        "X-Linked-Size": str(len(found.data)),
                        "X-Linked-Etag": f'"{found.sha256}"',
                        "ETag": f'"{found.sha256}"',
                    },
                )
            else:
                headers = {"X-Repo-Commit": commit, "ETag": f'"{found.git_sha1}"'}
                self._serve_bytes(found, send_body, headers)

        def _serve_bytes(
            self, hosted: HostedFile, send_body: bool, headers: dict[str, str] | None = None
        ) -> None:
            data = _served_data(hub, hosted.data) if send_body else hosted.data
            start = 0
            if send_body and self.headers["Range"] and not hub.ignore_range:
                start = int(self.headers["Range"].removeprefix("bytes=").removesuffix("-"))
                if start >= len(data):
                    self._send_empty(416, {"Content-Range": f"bytes */{len(data)}"})
                    return
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data) - start))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if send_body:
                self._write_body(data[start:])

        def _write_body(self, body: bytes) -> None:
            with hub.lock:
                cut, hub.cut_after = hub.cut_after, None
            if cut is not None:
                body = body[:cut]
                self.close_connection = True
            # Counted before writing: the client may finish reading (and a test check the count)
            # before this thread runs again.
            with hub.lock:
                hub.bytes_sent += len(body)
            self.wfile.write(body)
            self.wfile.flush()

        def _send_empty(self, status: int, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


def _served_data(hub: HubServer, data: bytes) -> bytes:
    """The bytes a GET delivers once the configured faults are applied."""
    if hub.corrupt:
        middle = len(data) // 2
        data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
    if hub.truncate_to is not None:
        data = data[: hub.truncate_to]
    return data
