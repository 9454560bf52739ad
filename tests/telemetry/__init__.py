"""Metrics, dashboards and alerts, event-loop lag."""
