"""Auctions end to end through the real exchange."""
