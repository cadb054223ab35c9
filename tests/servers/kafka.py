"""Session fixture for a real kafka server (filled in by the kafka backend work)."""
