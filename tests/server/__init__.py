"""Processes: the worker supervisor, the compose file."""
