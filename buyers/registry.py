"""Adapters by name: the buyer config's ``adapter:`` key picks one (default ``json``).

Adding a buyer format is one module with an adapter class and one line here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from buyers.adapter import Adapter, BuyerEndpoint
from buyers.http_adapter import HttpAdapter
from buyers.json_adapter import JsonAdapter
from exchange.core.config import BuyerConfig, VerticalConfig
from exchange.core.fields import FieldSpec

DEFAULT_ADAPTER = "json"

ADAPTERS: Mapping[str, Callable[[BuyerEndpoint], Adapter]] = MappingProxyType(
    {"json": JsonAdapter, "http": HttpAdapter}
)


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


def endpoint_for(buyer: BuyerConfig, verticals: Mapping[str, VerticalConfig]) -> BuyerEndpoint:
    """What the buyer's adapter is built from: its URLs, secret, options and templates,
    and the fields of its verticals (a template may name those only)."""
    fields: dict[str, FieldSpec] = {}
    for name in buyer.verticals:
        vertical = verticals.get(name)
        if vertical is not None:
            for field_name, spec in vertical.fields.items():
                known = fields.get(field_name)
                # A field PII in any of the buyer's verticals is treated as PII in all.
                if known is None or spec.pii:
                    fields[field_name] = spec
    return BuyerEndpoint(
        buyer_id=buyer.id,
        ping_url=buyer.ping_url,
        post_url=buyer.post_url,
        secret=buyer.secret.encode(),
        options=buyer.adapter_options,
        ping_template=buyer.ping,
        post_template=buyer.post,
        lead_fields=fields,
    )


def adapter_for(buyer: BuyerConfig, verticals: Mapping[str, VerticalConfig]) -> Adapter:
    """The buyer's adapter, built as the exchange runs it. Bad options or templates raise
    ValueError naming the key path inside the buyer (``ping.fields.Zip: ...``)."""
    return build_adapter(buyer.adapter, endpoint_for(buyer, verticals))
