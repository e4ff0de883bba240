"""Whether the HuggingFace hub can be used, and switching the hub libraries to their cache.

Without a network, huggingface_hub and datasets retry each request with back-off for up to a
minute before failing. moai asks once, with a short time-out, and when the hub does not answer
switches both libraries offline: what is in the local cache still loads, anything else fails at
once and moai says so in one line.

    >>> import os
    >>> os.environ["HF_HUB_OFFLINE"] = "1"
    >>> hub_reachable()
    False
"""

from __future__ import annotations

import os
import socket
import sys

_ON = ("1", "true", "yes", "on")


def offline_requested() -> bool:
    """HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set."""
    return any(os.environ.get(k, "").strip().lower() in _ON for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """False when offline mode is set or the hub's host does not accept a connection within
    `timeout` seconds."""
    if offline_requested():
        return False
    from urllib.parse import urlparse

    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def go_offline() -> None:
    """Switch huggingface_hub and datasets to offline mode, including modules already imported
    (they read the variables at import)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    if "huggingface_hub" in sys.modules:
        import huggingface_hub.constants

        huggingface_hub.constants.HF_HUB_OFFLINE = True
    if "datasets" in sys.modules:
        import datasets.config

        datasets.config.HF_HUB_OFFLINE = True
        datasets.config.HF_DATASETS_OFFLINE = True


def cache_only_unless_reachable() -> bool:
    """Go offline when the hub does not answer; True when it does."""
    if hub_reachable():
        return True
    go_offline()
    return False
