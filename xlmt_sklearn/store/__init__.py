"""The per-text cache: the CacheBase interface, EmbeddingCache, its SQLite store, the keys."""
