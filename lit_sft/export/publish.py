"""The exported folder uploaded to the Hugging Face Hub, through huggingface_hub.

The token and the endpoint are found as the Hub's own clients find them (HF_TOKEN or the saved
login, HF_ENDPOINT).
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from lit_sft.errors import UserError


class PublishError(UserError, RuntimeError):
    """The Hub refused the upload (a bad token, no write access, a bad name)."""


def push_folder(folder: Path, repo_id: str, private: bool = False) -> str:
    """Creates `repo_id` if needed and uploads `folder` to it; the commit's URL."""
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=folder, commit_message="Upload a lit_sft export"
        )
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status in (401, 403):
            raise PublishError(
                f"the Hub refused the token (HTTP {status}) for {repo_id}; set HF_TOKEN to a token "
                "with write access (or run `hf auth login`)"
            ) from None
        raise PublishError(f"the Hub refused the upload to {repo_id}: {error}") from None
    return commit.commit_url
