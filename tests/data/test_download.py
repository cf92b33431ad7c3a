from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lit_sft.data.entries import load_entries
from lit_sft.hub import DownloadError, local_copy
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


def test_interrupted_download_resumes_with_range(server, tmp_path: Path) -> None:
    url, hub = server
    data = os.urandom(50_000)
    hub.add_static("/big.json", data)
    cache, cut = tmp_path / "cache", len(data) // 3
    hub.cut_after = cut
    with pytest.raises(DownloadError, match="next run resumes"):
        local_copy(f"{url}/big.json", cache, progress=False)
    (part,) = cache.glob("*.part")
    assert part.stat().st_size == cut

    hub.requests.clear()
    path = local_copy(f"{url}/big.json", cache, progress=False)
    assert path.read_bytes() == data
    assert [r.range for r in hub.requests] == [f"bytes={cut}-"]
    assert hub.bytes_sent == len(data)
    assert not part.exists()


def test_server_ignoring_range_restarts_the_file(server, tmp_path: Path) -> None:
    url, hub = server
    data = os.urandom(50_000)
    hub.add_static("/big.json", data)
    hub.cut_after = len(data) // 2
    with pytest.raises(DownloadError):
        local_copy(f"{url}/big.json", tmp_path, progress=False)
    hub.ignore_range = True
    assert local_copy(f"{url}/big.json", tmp_path, progress=False).read_bytes() == data


def test_stale_part_longer_than_the_file_is_replaced(server, tmp_path: Path) -> None:
    url, hub = server
    data = os.urandom(5000)
    hub.add_static("/big.json", data)
    hub.cut_after = 10
    with pytest.raises(DownloadError):
        local_copy(f"{url}/big.json", tmp_path, progress=False)
    (part,) = tmp_path.glob("*.part")
    part.write_bytes(b"x" * (len(data) + 1))  # e.g. left by a different file at this URL
    assert local_copy(f"{url}/big.json", tmp_path, progress=False).read_bytes() == data
    assert [r.range for r in hub.requests[1:]] == [f"bytes={len(data) + 1}-", None]
    assert not part.exists()


def test_lit_sft_cache_moves_the_dataset_cache(
    server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, hub = server
    monkeypatch.setenv("LIT_SFT_CACHE", str(tmp_path / "moved"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # were it ignored: ~/.cache/lit_sft
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert load_entries(f"{url}/data.json") == ENTRIES
    [cached] = (tmp_path / "moved" / "data").glob("*.json")
    assert json.loads(cached.read_text()) == ENTRIES
    assert not (tmp_path / "home").exists()
    assert load_entries(f"{url}/data.json") == ENTRIES  # from the moved cache: no second GET
    assert gets(hub) == ["/data.json"]
