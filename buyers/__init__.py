"""Buyer protocol adapters (no I/O), request signing, and the buyer simulator."""
