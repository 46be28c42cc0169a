"""The Hugging Face hub adapter: the commit a hub dataset is read at, its split's data files, read as streams.

A hub dataset is read at one commit: `resolve_revision` asks the hub which commit a branch or tag points to
(once, when a preparation starts; the preparation records it). `data_files` asks `datasets` to resolve the
dataset's configuration and split at that commit into its data files (parquet or JSON lines, as hf:// paths
that carry the commit: hf://datasets/NAME@SHA/...), and `open_file` reads one of them through
`huggingface_hub`'s file system, which fetches byte ranges as the reader asks for them. Every other module
reaches the hub through these three functions.
"""

from __future__ import annotations

import socket
from typing import IO
from urllib.parse import urlparse

from ..errors import ConfigError

HF_FILE_PREFIX = "hf://"  # a file of a hub repository, as HfFileSystem names it


def resolve_revision(name: str, revision: str | None, setting: str = "data.source",
                     revision_setting: str = "data.hub_revision") -> str | None:
    """The commit that `revision` of dataset `name` (a branch, tag or commit; None: the default branch) is at
    now. None for a local folder laid out like a hub repository, which has no revisions; offline
    (HF_HUB_OFFLINE=1), `revision` as given, for the cached copy. Fails in seconds without the network."""
    import datasets

    if _is_local(name):
        if revision is not None:
            raise ConfigError(f"{revision_setting}: {name} is a local folder, which has no revisions; remove "
                              f"{revision_setting}")
        return None
    if datasets.config.HF_HUB_OFFLINE:
        return revision
    _check_reachable(name, setting)
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        return HfApi().dataset_info(name, revision=revision).sha
    except RevisionNotFoundError:
        raise ConfigError(f"{revision_setting}: hub:{name} has no revision {revision!r} (no branch, tag or commit "
                          "of that name)") from None
    except RepositoryNotFoundError:
        raise ConfigError(f"{setting}: hub:{name} does not exist, or is private or gated (then log in, or set "
                          "HF_TOKEN, as a user with access)") from None
    except Exception as err:  # noqa: BLE001 -- a malformed name, a server error, ...
        raise ConfigError(f"{setting}: cannot resolve hub:{name}: {_reason(err)}") from None


def data_files(name: str, config: str | None, split: str, revision: str | None,
               setting: str = "data.source") -> list[str]:
    """The data files of `name`'s `split` under `config` at commit `revision` (see `resolve_revision`), in the
    dataset's order (hf:// paths; plain paths for a local dataset folder laid out like a hub repository). Fails
    in seconds without the network."""
    import datasets

    if not datasets.config.HF_HUB_OFFLINE and "/" in name and not _is_local(name):
        _check_reachable(name, setting)
    try:
        builder = datasets.load_dataset_builder(name, config, revision=revision)
    except Exception as err:  # noqa: BLE001 -- datasets raises many kinds for a bad name, config or access
        raise ConfigError(f"{setting}: cannot resolve hub:{name} (config {config}): {_reason(err)}") from None
    files = (builder.config.data_files or {}).get(split)
    if not files:
        splits = ", ".join(builder.config.data_files or {}) or "none"
        raise ConfigError(f"{setting}: hub:{name} (config {config}) has no data files for split {split!r}; "
                          f"splits: {splits}")
    return [str(f) for f in files]


def open_file(path: str) -> IO[bytes]:
    """A binary file object for a local path or an hf:// path (read lazily, in ranges)."""
    if path.startswith(HF_FILE_PREFIX):
        from huggingface_hub import HfFileSystem

        return HfFileSystem().open(path, "rb", block_size=8 << 20)
    return open(path, "rb")


def _is_local(name: str) -> bool:
    from pathlib import Path

    return Path(name).expanduser().exists()


def _check_reachable(name: str, setting: str) -> None:
    """Fail in seconds, not after datasets' minute of retries, when the hub cannot be reached."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=5).close()
    except OSError as err:
        raise ConfigError(f"{setting}: hub:{name} needs the network, but {url.hostname} is unreachable ({err}); "
                          "use a local path, or HF_HUB_OFFLINE=1 for a cached copy") from None


def _reason(err: BaseException) -> str:
    """The root cause in one line: datasets wraps the real error in a generic one."""
    while err.__cause__ is not None:
        err = err.__cause__
    return f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
