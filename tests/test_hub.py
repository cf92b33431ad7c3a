"""Hub files through huggingface_hub, against a local stand-in for the Hub."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import constants

from lit_sft.checkpoints import resolve_weights
from lit_sft.data.entries import load_entries
from lit_sft.hub import DownloadError, HubFile, parse_hub_path
from tests.helpers.hub_server import HubServer, commit_of, set_hf_endpoint

REPO = "openai-community/gpt2-test"
DATA_REPO = "someone/instructions"
ENTRIES = [{"instruction": "Say hi.", "input": "", "output": "Hi."}] * 3
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def hub() -> Iterator[HubServer]:
    server = HubServer().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def no_ambient_hub_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", "/nonexistent/token")


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def snapshot(cache: Path, repo: str, revision: str = "main", kind: str = "models") -> Path:
    """Where the Hugging Face cache keeps a repository's files at `revision`."""
    return cache / f"{kind}--{repo.replace('/', '--')}" / "snapshots" / commit_of(repo, revision)


def weights(hub: HubServer, cache: Path, **kwargs: object) -> Path:
    return resolve_weights("pretrained", REPO, cache_dir=cache, endpoint=hub.url, **kwargs)


def test_download_goes_to_the_hf_cache_and_second_run_makes_no_request(
    hub: HubServer, tmp_path: Path
) -> None:
    data = os.urandom(3000)
    hub.add_file(REPO, data)
    cache = tmp_path / "hf-cache"

    path = weights(hub, cache)
    assert path == snapshot(cache, REPO) / "model.safetensors"
    assert path.read_bytes() == data
    blob = Path(os.path.realpath(path))
    assert (
        blob.parent.name == "blobs"
        and blob.name == hub.repos[f"/{REPO}"]["main"]["model.safetensors"].sha256
    )
    assert [(r.method, r.path) for r in hub.requests] == [
        ("HEAD", f"/{REPO}/resolve/main/model.safetensors"),
        ("GET", f"/cdn/{blob.name}"),
    ]

    hub.requests.clear()
    assert weights(hub, cache) == path
    assert resolve_weights("pretrained", REPO, cache_dir=cache, endpoint=closed_port_url()) == path
    assert hub.requests == []


def test_offline_mode_uses_the_cache_and_fails_clearly_without_it(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add_file(REPO, b"weights")
    cache = tmp_path / "hf-cache"
    path = weights(hub, cache)
    hub.requests.clear()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    assert weights(hub, cache) == path
    with pytest.raises(DownloadError) as error:
        weights(hub, tmp_path / "empty-cache")
    assert hub.requests == []
    assert str(error.value) == (
        f"hf://{REPO}/model.safetensors is not in the Hugging Face cache "
        f"{tmp_path / 'empty-cache'} and HF_HUB_OFFLINE is set; unset HF_HUB_OFFLINE to "
        "download it, or pass a local file instead: model.weights=/path/to/model.safetensors"
    )


def test_hf_token_is_sent_as_bearer(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add_file(REPO, b"gated weights")
    hub.token = "hf_secret"
    with pytest.raises(DownloadError, match=r"not on the Hub: RepositoryNotFoundError .*HF_TOKEN"):
        weights(hub, tmp_path)
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert weights(hub, tmp_path).read_bytes() == b"gated weights"
    resolves = [r for r in hub.requests if "/resolve/" in r.path]
    assert [r.authorization for r in resolves] == [None, "Bearer hf_secret"]
    assert hub.requests[-1].authorization is None  # the CDN gets no token, as on the Hub


def test_revision_is_pinned_in_the_url(hub: HubServer, tmp_path: Path) -> None:
    hub.add_file(REPO, b"main weights")
    hub.add_file(REPO, b"v1 weights", revision="v1")
    path = weights(hub, tmp_path, revision="v1")
    assert path.read_bytes() == b"v1 weights"
    assert hub.requests[0].path == f"/{REPO}/resolve/v1/model.safetensors"
    assert weights(hub, tmp_path).read_bytes() == b"main weights"
    commit = commit_of(REPO, "v1")
    hub.requests.clear()
    assert weights(hub, tmp_path, revision=commit) == path  # a cached commit: no request
    assert hub.requests == []


def test_corrupt_download_is_rejected_and_deleted(hub: HubServer, tmp_path: Path) -> None:
    data = os.urandom(4000)
    hub.add_file(REPO, data)
    hub.corrupt = True  # same size, one byte flipped: only the sha256 tells
    with pytest.raises(DownloadError, match="corrupt .*sha256 .* does not match"):
        weights(hub, tmp_path)
    assert not list(tmp_path.glob("models--*/blobs/*"))
    assert not list(tmp_path.glob("models--*/snapshots/*/*"))

    hub.corrupt = False
    assert weights(hub, tmp_path).read_bytes() == data


def test_unreachable_endpoint_names_the_repo_and_the_local_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # huggingface_hub retries a failed HEAD with backoff before it gives up; not in a test.
    monkeypatch.setattr("huggingface_hub.utils._http.time.sleep", lambda s: None)
    endpoint = closed_port_url()
    with pytest.raises(DownloadError) as error:
        resolve_weights("pretrained", REPO, cache_dir=tmp_path, endpoint=endpoint)
    message = str(error.value)
    assert message.startswith(f"could not download hf://{REPO}/model.safetensors from {endpoint}")
    assert message.endswith("model.weights=/path/to/model.safetensors")


def test_missing_file_and_repository_are_named(hub: HubServer, tmp_path: Path) -> None:
    hub.add_file(REPO, b"weights", "pytorch_model.bin")
    with pytest.raises(DownloadError, match=r"safetensors is not on the Hub: RemoteEntryNotFound"):
        weights(hub, tmp_path)
    with pytest.raises(DownloadError, match=r"gpt2-nope/model.safetensors is not on the Hub"):
        resolve_weights("pretrained", "x/gpt2-nope", cache_dir=tmp_path, endpoint=hub.url)


def test_hub_dataset_path_is_downloaded_once_into_the_cache(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_hf_endpoint(monkeypatch, hub.url)
    text = json.dumps(ENTRIES).encode()
    hub.add_file(DATA_REPO, text, "data/train.json", repo_type="dataset", lfs=False)
    hub.add_file(DATA_REPO, text[:-1] + b", {}]", "data/train.json", repo_type="dataset",
                 revision="v2", lfs=False)  # fmt: skip
    path = f"hf://datasets/{DATA_REPO}/data/train.json"
    assert load_entries(path, tmp_path) == ENTRIES
    assert load_entries(path, tmp_path) == ENTRIES
    assert [r.path for r in hub.requests] == [
        f"/datasets/{DATA_REPO}/resolve/main/data/train.json",
        f"/datasets/{DATA_REPO}/resolve/main/data/train.json",
    ]  # HEAD, GET; the second load reads the cache
    file = snapshot(tmp_path, DATA_REPO, kind="datasets") / "data" / "train.json"
    assert file.read_bytes() == text
    with pytest.raises(
        ValueError,
        match="entry 3 has no 'instruction' field, in hf://datasets/someone/instructions@v2/data/train.json",
    ):
        load_entries(f"hf://datasets/{DATA_REPO}@v2/data/train.json", tmp_path)
    assert hub.requests[-2].path == f"/datasets/{DATA_REPO}/resolve/v2/data/train.json"


def test_hub_path_syntax() -> None:
    assert parse_hub_path("hf://datasets/a/b@v1.0/x/y.jsonl") == HubFile(
        "a/b", "x/y.jsonl", "dataset", "v1.0"
    )
    assert str(HubFile("a/b", "x.json", "dataset", "dev")) == "hf://datasets/a/b@dev/x.json"
    for bad in ("hf://datasets/a/x.json", "hf://a/b/x.json", "hf://datasets/a/b@v1"):
        with pytest.raises(ValueError, match="hf://datasets/<owner>/<repo>/<file>"):
            parse_hub_path(bad)


def test_environment_variables_reach_huggingface_hub(hub: HubServer, tmp_path: Path) -> None:
    """HF_ENDPOINT, HF_HUB_CACHE, HF_TOKEN and HF_HUB_OFFLINE, read as a user sets them."""
    hub.add_file(REPO, b"from the env")
    hub.token = "hf_env"
    script = (  # lit_sft.hub alone: importing torch would take seconds per run
        "from lit_sft.hub import HubFile, hub_download\n"
        f"print(hub_download(HubFile({REPO!r}, 'model.safetensors'), hint='use a local file'))"
    )
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HUB_CACHE": str(tmp_path / "env-cache"),
        "HF_TOKEN": "hf_env",
    }

    def run(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", script],
            env={**env, **extra},
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    online = run()
    assert online.returncode == 0, online.stderr
    path = Path(online.stdout.strip())
    assert path == snapshot(tmp_path / "env-cache", REPO) / "model.safetensors"
    assert path.read_bytes() == b"from the env"
    resolves = [r for r in hub.requests if "/resolve/" in r.path]
    assert [r.authorization for r in resolves] == ["Bearer hf_env"]

    hub.stop()
    offline = run(HF_HUB_OFFLINE="1")
    assert offline.returncode == 0, offline.stderr
    assert Path(offline.stdout.strip()) == path
    empty = run(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "empty"))
    assert "HF_HUB_OFFLINE is set; unset HF_HUB_OFFLINE to download it, or use a local file" in (
        empty.stderr
    )
