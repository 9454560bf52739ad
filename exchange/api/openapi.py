"""The published API contract: the OpenAPI 3.1 document of the seller, operator and health
endpoints, kept as exchange/api/openapi.yaml and served as JSON at ``GET /openapi.json``.

The YAML file is the source; it is read once when the routes are built. A test
(tests/api/test_openapi_contract.py) keeps it and the app's router in step and validates real
answers against its schemas, so the document cannot drift from the handlers.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import orjson
import yaml
from aiohttp import web

DOCUMENT_FILE = "openapi.yaml"
PATH = "/openapi.json"


def load_document() -> dict[str, Any]:
    """The OpenAPI document as a mapping, read from the package's YAML file."""
    text = resources.files("exchange.api").joinpath(DOCUMENT_FILE).read_text(encoding="utf-8")
    document = yaml.safe_load(text)
    if not isinstance(document, dict):
        raise ValueError(f"exchange/api/{DOCUMENT_FILE} is not a mapping")
    return document


def routes() -> list[web.RouteDef]:
    body = orjson.dumps(load_document())

    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    return [web.get(PATH, openapi_json)]
