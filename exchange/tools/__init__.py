"""Tools around the product, not part of it: the buyer simulator and the demo."""
