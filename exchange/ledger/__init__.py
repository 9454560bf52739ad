"""The ledger in PostgreSQL: pool and migrations, the store's statements, the batch writer
and its rollups, dead letters.
"""
