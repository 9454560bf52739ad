"""Running auctions: the fan-out under the deadline, the post walk down the ping tree, post
claims, admission. Drives the core, the buyer adapters, the transport and the ledger; no
HTTP, no SQL text.
"""
