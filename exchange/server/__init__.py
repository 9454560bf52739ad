"""Running the exchange as processes: the worker supervisor of serve --workers and the
embedded PostgreSQL.
"""
