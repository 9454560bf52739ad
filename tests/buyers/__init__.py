"""Buyer adapters, by their fixture files."""
