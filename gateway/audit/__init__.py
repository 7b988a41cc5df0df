"""The tamper-evident audit log: entries, Merkle tree, storage and signed notes."""
