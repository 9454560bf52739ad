"""The pure core: outcomes, money, lead fields, what the ledger can store, the config's
models, eligibility, ranking, caps, duplicates. No I/O, no clock: it imports nothing of
asyncio, aiohttp or asyncpg, and nothing else of the project.
"""
