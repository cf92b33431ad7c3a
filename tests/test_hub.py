"""The downloader against a local stand-in for the Hub: cache, resume, verification, errors."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from lit_sft.hub import (
    DEFAULT_HUB_URL,
    DownloadError,
    default_cache_dir,
    download_hub_weights,
    hub_file_url,
)
from tests.helpers.gpt2 import random_hf_model, save_hf_checkpoint
from tests.helpers.hub_server import HubServer

REPO = "openai-community/gpt2-test"


@pytest.fixture
def hub() -> Iterator[HubServer]:
    server = HubServer().start()
    yield server
    server.stop()


def hf_checkpoint_bytes(tmp_path: Path) -> bytes:
    hf = random_hf_model(tie=True)
    return save_hf_checkpoint(hf, tmp_path / "src.safetensors", prefix="", head=False).read_bytes()


def cached_files(cache: Path) -> list[str]:
    repo_dir = cache / REPO
    return sorted(p.name for p in repo_dir.iterdir()) if repo_dir.exists() else []


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_hub_urls_and_cache_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert hub_file_url("openai-community/gpt2-xl") == (
        f"{DEFAULT_HUB_URL}/openai-community/gpt2-xl/resolve/main/model.safetensors"
    )
    monkeypatch.delenv("LIT_SFT_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "lit_sft" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "lit_sft" / "hub"
    monkeypatch.setenv("LIT_SFT_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine" / "hub"


def test_download_caches_and_second_run_makes_no_request(
    hub: HubServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = hf_checkpoint_bytes(tmp_path)
    hub.add_file(REPO, data)
    cache = tmp_path / "cache"

    path = download_hub_weights(REPO, cache_dir=cache, base_url=hub.url, progress=True)
    assert path == cache / REPO / "model.safetensors"
    assert path.read_bytes() == data
    assert [r.method for r in hub.requests] == ["HEAD", "GET", "GET"]  # GET follows to the CDN
    assert REPO in capsys.readouterr().err  # the progress bar
    assert "model.safetensors.part" not in cached_files(cache)

    hub.requests.clear()
    assert download_hub_weights(REPO, cache_dir=cache, base_url=hub.url) == path
    assert download_hub_weights(REPO, cache_dir=cache, base_url=closed_port_url()) == path
    assert hub.requests == []


def test_cache_dir_comes_from_environment(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add_file(REPO, b"weights")
    monkeypatch.setenv("LIT_SFT_CACHE", str(tmp_path / "env-cache"))
    path = download_hub_weights(REPO, base_url=hub.url, progress=False)
    assert path == tmp_path / "env-cache" / "hub" / REPO / "model.safetensors"


def test_interrupted_download_resumes_with_range(hub: HubServer, tmp_path: Path) -> None:
    data = hf_checkpoint_bytes(tmp_path)
    hub.add_file(REPO, data)
    cache, cut = tmp_path / "cache", len(data) // 3
    hub.cut_after = cut

    with pytest.raises(DownloadError, match="next run resumes"):
        download_hub_weights(REPO, cache_dir=cache, base_url=hub.url, progress=False)
    part = cache / REPO / "model.safetensors.part"
    assert part.stat().st_size == cut
    assert "model.safetensors" not in cached_files(cache)

    hub.requests.clear()
    path = download_hub_weights(REPO, cache_dir=cache, base_url=hub.url, progress=False)
    assert path.read_bytes() == data
    assert [r.range for r in hub.requests if r.method == "GET"] == [f"bytes={cut}-"] * 2
    assert hub.bytes_sent == len(data)
    assert not part.exists()


def test_server_ignoring_range_restarts_the_file(hub: HubServer, tmp_path: Path) -> None:
    data = hf_checkpoint_bytes(tmp_path)
    hub.add_file(REPO, data)
    hub.cut_after = len(data) // 2
    with pytest.raises(DownloadError):
        download_hub_weights(REPO, cache_dir=tmp_path, base_url=hub.url, progress=False)
    hub.ignore_range = True
    path = download_hub_weights(REPO, cache_dir=tmp_path, base_url=hub.url, progress=False)
    assert path.read_bytes() == data


def test_stale_part_longer_than_the_file_is_replaced(hub: HubServer, tmp_path: Path) -> None:
    data = hf_checkpoint_bytes(tmp_path)
    hub.add_file(REPO, data)
    (tmp_path / REPO).mkdir(parents=True)
    (tmp_path / REPO / "model.safetensors.part").write_bytes(b"x" * (len(data) + 1))
    path = download_hub_weights(REPO, cache_dir=tmp_path, base_url=hub.url, progress=False)
    assert path.read_bytes() == data
    assert all(r.range is None for r in hub.requests)


@pytest.mark.parametrize(
    ("fault", "reason"), [("corrupt", "sha256"), ("truncate", "bytes arrived")]
)
def test_corrupt_or_truncated_download_is_deleted(
    hub: HubServer, tmp_path: Path, fault: str, reason: str
) -> None:
    data = hf_checkpoint_bytes(tmp_path)
    hub.add_file(REPO, data)
    cache = tmp_path / "cache"
    hub.corrupt = fault == "corrupt"
    hub.truncate_to = len(data) - 100 if fault == "truncate" else None

    with pytest.raises(DownloadError, match=f"corrupt .*{reason}"):
        download_hub_weights(REPO, cache_dir=cache, base_url=hub.url, progress=False)
    assert cached_files(cache) == ["model.safetensors.lock"]

    hub.corrupt, hub.truncate_to = False, None
    path = download_hub_weights(REPO, cache_dir=cache, base_url=hub.url, progress=False)
    assert path.read_bytes() == data


def test_plain_mirror_without_hub_headers(hub: HubServer, tmp_path: Path) -> None:
    data = os.urandom(5000)
    hub.add_file(REPO, data)
    hub.plain = True
    hub.truncate_to = 4000  # HEAD's Content-Length still says 5000
    with pytest.raises(DownloadError, match="4000 bytes arrived, 5000 announced"):
        download_hub_weights(REPO, cache_dir=tmp_path, base_url=hub.url, progress=False)
    hub.truncate_to = None
    path = download_hub_weights(REPO, cache_dir=tmp_path, base_url=hub.url, progress=False)
    assert path.read_bytes() == data


def test_renamed_repository_is_followed(hub: HubServer, tmp_path: Path) -> None:
    data = hf_checkpoint_bytes(tmp_path)
    hub.add_file(REPO, data)
    hub.add_alias("gpt2-test", REPO)
    path = download_hub_weights("gpt2-test", cache_dir=tmp_path, base_url=hub.url, progress=False)
    assert path.read_bytes() == data
    assert [r.method for r in hub.requests] == ["HEAD", "HEAD", "GET", "GET", "GET"]


def test_unreachable_hub_names_url_and_local_fallback(tmp_path: Path) -> None:
    base_url = closed_port_url()
    with pytest.raises(DownloadError) as error:
        download_hub_weights(REPO, cache_dir=tmp_path, base_url=base_url, progress=False)
    assert hub_file_url(REPO, base_url=base_url) in str(error.value)
    assert "model.weights=/path/to/model.safetensors" in str(error.value)
    assert "model.safetensors" not in cached_files(tmp_path)


def test_missing_repository_names_url_and_status(hub: HubServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError) as error:
        download_hub_weights(REPO, cache_dir=tmp_path, base_url=hub.url, progress=False)
    assert f"{hub_file_url(REPO, base_url=hub.url)} answered HTTP 404" in str(error.value)
