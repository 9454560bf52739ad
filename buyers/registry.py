"""Adapters by name: the buyer config's ``adapter:`` key picks one (default ``json``).

Adding a buyer format is one module with an adapter class and one line here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from buyers.adapter import Adapter, BuyerEndpoint
from buyers.json_adapter import JsonAdapter

DEFAULT_ADAPTER = "json"

ADAPTERS: Mapping[str, Callable[[BuyerEndpoint], Adapter]] = MappingProxyType({"json": JsonAdapter})


def build_adapter(name: str, endpoint: BuyerEndpoint) -> Adapter:
    """The adapter called ``name`` built for one buyer. Unknown names raise KeyError."""
    try:
        factory = ADAPTERS[name]
    except KeyError:
        known = ", ".join(sorted(ADAPTERS))
        raise KeyError(
            f"unknown buyer adapter {name!r} for buyer {endpoint.buyer_id!r} (known: {known})"
        ) from None
    return factory(endpoint)
