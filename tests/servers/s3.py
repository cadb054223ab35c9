"""Session fixture for a real s3 server (filled in by the s3 backend work)."""
