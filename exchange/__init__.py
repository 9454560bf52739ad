"""lead-exchange: a real-time ping-post lead auction exchange."""

__version__ = "0.1.0"
