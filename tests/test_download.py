from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lit_sft.data import load_entries

ENTRIES = [{"instruction": "Say hi.", "input": "", "output": "Hi."}] * 3


class CountingHandler(SimpleHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "data.json").write_text(json.dumps(ENTRIES))
    handler = type("Handler", (CountingHandler,), {"requests": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", handler.requests
    httpd.shutdown()
    httpd.server_close()


def test_url_is_downloaded_once_and_cached(server, tmp_path: Path) -> None:
    url, requests = server
    cache = tmp_path / "cache"
    assert load_entries(f"{url}/data.json", cache) == ENTRIES
    assert load_entries(f"{url}/data.json", cache) == ENTRIES
    assert requests == ["/data.json"]
    assert [p.suffix for p in cache.iterdir()] == [".json"]  # no partial file left behind


def test_missing_url_names_it_and_the_way_out(server, tmp_path: Path) -> None:
    url, _ = server
    with pytest.raises(RuntimeError, match=r"missing\.json.*data\.path="):
        load_entries(f"{url}/missing.json", tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"could not download http://127\.0\.0\.1:9/data\.json"):
        load_entries("http://127.0.0.1:9/data.json", tmp_path / "cache")
