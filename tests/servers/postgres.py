"""Session fixture for a real postgres server (filled in by the postgres backend work)."""
