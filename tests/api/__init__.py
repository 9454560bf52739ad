"""The HTTP API: errors, the OpenAPI contract, reports, security."""
