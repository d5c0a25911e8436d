"""Partner read API (/data): JWT auth, scoped reads, delivery inspection and replay."""
