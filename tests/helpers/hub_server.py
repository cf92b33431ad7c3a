"""A local stand-in for the Hugging Face Hub's file downloads and for plain web servers."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class LoggedRequest:
    """One request the server received."""

    method: str
    path: str
    range: str | None


@dataclass
class HostedFile:
    """A file the server hosts, addressed by its sha256 on the fake CDN."""

    data: bytes
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        self.sha256 = hashlib.sha256(self.data).hexdigest()


class HubServer:
    """Serves `/{repo}/resolve/main/{file}` the way the Hub serves LFS files, on 127.0.0.1.

    A HEAD or GET there answers 302 to `/cdn/{sha256}` with X-Linked-Size, X-Linked-Etag and
    ETag, as the Hub does; the CDN path serves the bytes and honours `Range: bytes=N-`.
    `plain=True` makes it a static mirror instead: 200 with Content-Length and no Hub headers.
    `add_alias` makes an old repository name answer 307 with a relative Location, as the Hub
    does for renamed repositories (`gpt2` -> `openai-community/gpt2`).
    Faults, for the next GETs of the CDN path: `cut_after` (one transfer stops after that many
    bytes), `corrupt` (a flipped byte), `truncate_to` (a complete transfer of a shorter file),
    `ignore_range` (whole file with 200, as servers without range support answer).
    """

    def __init__(self) -> None:
        self.files: dict[str, HostedFile] = {}
        self.aliases: dict[str, str] = {}
        self.static: dict[str, HostedFile] = {}
        self.requests: list[LoggedRequest] = []
        self.bytes_sent = 0
        self.plain = False
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

    def add_file(self, repo: str, data: bytes, filename: str = "model.safetensors") -> None:
        """Hosts `data` as `filename` of `repo`."""
        self.files[f"/{repo}/resolve/main/{filename}"] = HostedFile(data)

    def add_static(self, path: str, data: bytes) -> None:
        """Hosts `data` at `path` as a plain web server would (a dataset URL)."""
        self.static[path] = HostedFile(data)

    def add_alias(self, old_repo: str, repo: str) -> None:
        """Redirects requests for `old_repo` to `repo`."""
        self.aliases[f"/{old_repo}/"] = f"/{repo}/"

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

        def _answer(self, send_body: bool) -> None:
            with hub.lock:
                hub.requests.append(LoggedRequest(self.command, self.path, self.headers["Range"]))
            for old, new in hub.aliases.items():
                if self.path.startswith(old):
                    location = new + self.path.removeprefix(old)
                    self._send_empty(307, {"Location": location})
                    return
            if self.path in hub.static:
                self._serve_bytes(hub.static[self.path], send_body)
                return
            if self.path in hub.files:
                self._resolve(hub.files[self.path], send_body)
                return
            by_sha = {f"/cdn/{f.sha256}": f for f in hub.files.values()}
            if self.path in by_sha:
                self._serve_bytes(by_sha[self.path], send_body)
                return
            self._send_empty(404)

        def _resolve(self, hosted: HostedFile, send_body: bool) -> None:
            if hub.plain:
                self._serve_bytes(hosted, send_body)
                return
            self.send_response(302)
            self.send_header("Location", f"{hub.url}/cdn/{hosted.sha256}")
            self.send_header("X-Repo-Commit", "0" * 40)
            self.send_header("X-Linked-Size", str(len(hosted.data)))
            self.send_header("X-Linked-Etag", f'"{hosted.sha256}"')
            self.send_header("ETag", f'"{hosted.sha256}"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _serve_bytes(self, hosted: HostedFile, send_body: bool) -> None:
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
            self.wfile.write(body)
            self.wfile.flush()
            with hub.lock:
                hub.bytes_sent += len(body)

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
