"""Fast detection of whether the Hugging Face hub is reachable, so offline machines never hang on the network."""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE = {"1", "true", "yes", "on"}


def _endpoint() -> tuple[str, int]:
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)


@functools.cache
def hub_online(timeout: float = 1.5) -> bool:
    """True when the hub accepts a TCP connection within ``timeout`` seconds and no offline variable is set.

    When it is unreachable the HF offline variables are set for this process, so transformers, datasets and
    sentence-transformers read only their local caches instead of retrying the network.
    """
    if any(os.environ.get(name, "").lower() in _TRUE for name in OFFLINE_VARIABLES):
        return False
    host, port = _endpoint()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        for name in OFFLINE_VARIABLES:
            os.environ[name] = "1"
        return False
