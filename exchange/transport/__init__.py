"""Sending buyer requests: the transport contract (base.py) and the lean HTTP/1.1
transport (h1.py's H1Transport), whose parts live in connection.py, pool.py,
deadlines.py, request.py and response.py. Names starting with "_" in those modules are
shared within this package only."""
