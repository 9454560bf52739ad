"""What the exchange tells operators: Prometheus metrics, structured logs, event-loop lag."""
