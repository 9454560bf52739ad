"""The ledger in PostgreSQL: pool and migrations, the store's statements in one module
per area, the typed rows, the batch writer and its rollups, dead letters.
"""
