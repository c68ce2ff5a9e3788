"""Small helpers shared by every Faust app in CardBus."""

from __future__ import annotations


def broker_urls(bootstrap: str) -> list[str]:
    """Faust broker URLs for a ``host:port[,host:port]`` bootstrap string."""
    return [f"kafka://{hostport.strip()}" for hostport in bootstrap.split(",") if hostport.strip()]
