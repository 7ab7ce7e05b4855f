"""The evidence ledger: an append-only, Merkle-tree-backed log of signed records."""
