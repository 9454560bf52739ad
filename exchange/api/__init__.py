"""The HTTP API (aiohttp only): seller, buyer and operator handlers, authentication, the
error middleware and the OpenAPI document.
"""
