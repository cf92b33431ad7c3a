from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from lit_sft.data.entries import load_entries
from tests.helpers.hub_server import HubServer

ENTRIES = [{"instruction": "Say hi.", "input": "", "output": "Hi."}] * 3


@pytest.fixture
def server() -> Iterator[tuple[str, HubServer]]:
    hub = HubServer().start()
    hub.add_static("/data.json", json.dumps(ENTRIES).encode())
    yield hub.url, hub
    hub.stop()


def gets(hub: HubServer) -> list[str]:
    return [r.path for r in hub.requests if r.method == "GET"]


def test_url_is_downloaded_once_and_cached(server, tmp_path: Path) -> None:
    url, hub = server
    cache = tmp_path / "cache"
    assert load_entries(f"{url}/data.json", cache) == ENTRIES
    assert load_entries(f"{url}/data.json", cache) == ENTRIES
    assert gets(hub) == ["/data.json"]
    # The file and its lock; no partial download left behind.
    assert sorted(p.suffix for p in cache.iterdir()) == [".json", ".lock"]


def test_missing_url_names_it_and_the_way_out(server, tmp_path: Path) -> None:
    url, _ = server
    with pytest.raises(RuntimeError, match=r"missing\.json.*data\.path="):
        load_entries(f"{url}/missing.json", tmp_path / "cache")
    # Neither a file nor a partial download is left to be mistaken for the data.
    assert not [p for p in (tmp_path / "cache").iterdir() if p.suffix != ".lock"]


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"could not download http://127\.0\.0\.1:9/data\.json"):
        load_entries("http://127.0.0.1:9/data.json", tmp_path / "cache")
