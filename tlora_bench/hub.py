"""The Hugging Face hub: whether it can be reached, and loading weights when it cannot.

Without a route to the hub, the hub client retries each request for about a minute before it gives up, even
for files it has cached. Checking once (seconds) and then loading offline makes cached weights load at once and
missing ones fail at once, with the one-line error of the caller.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlparse


@functools.cache
def hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be reached (checked once per process, in seconds), or None."""
    from huggingface_hub import constants

    endpoint = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=5).close()
    except OSError as e:
        return f"{constants.ENDPOINT} cannot be reached: {e.strerror or type(e).__name__}"
    return None


@contextlib.contextmanager
def offline_when_unreachable() -> Iterator[None]:
    """Put the hub client offline for the duration when the hub cannot be reached; restore it after."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or hub_unreachable() is None:
        yield
        return
    previous, previous_env = constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE")
    constants.HF_HUB_OFFLINE, os.environ["HF_HUB_OFFLINE"] = True, "1"
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous
        if previous_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous_env


def why_unavailable(repo: str, revision: str | None = None) -> str | None:
    """Why `repo`, not in the local Hugging Face cache, cannot be downloaded now ("the hub is switched off
    ..."), or None when it can be had (cached, or the hub is reachable). Cheap: a look in the cache, then the
    one reachability check."""
    from huggingface_hub import constants, snapshot_download

    try:
        snapshot_download(repo, revision=revision, local_files_only=True)
        return None
    except Exception:  # not cached (or an unreadable cache entry): whether it can be downloaded decides
        pass
    return "the hub is switched off (HF_HUB_OFFLINE)" if constants.HF_HUB_OFFLINE else hub_unreachable()
