"""Inventory: an append-only ledger of stock moves between locations, balances derived from it."""
