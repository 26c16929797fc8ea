"""The vendor's quota: the Redis limiter every process shares, and an in-memory one for
one process and for tests."""
