"""The ledger on a real PostgreSQL: sales, claims, caps, durability, dead letters."""
