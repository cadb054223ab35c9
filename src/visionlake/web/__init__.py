"""`visionlake serve`: a web dashboard over the same Python API as the CLI (FastAPI, Jinja2 pages,
a JSON twin of every page under /api/). Needs the `dashboard` extra; see `app.create_app`."""
