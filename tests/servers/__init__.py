"""Real servers the test suite starts itself: a Kafka-protocol broker, PostgreSQL, an S3 server.

Each module exposes session-scoped pytest fixtures (loaded from tests/conftest.py via
`pytest_plugins`) and skips with an install hint only when the server's package is not installed.
"""
