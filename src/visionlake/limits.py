"""Default resource limits, in a module light enough for the CLI to import at start-up."""

#: Pixels a worker decodes at most per frame unless told otherwise (8K video is 33 MP; the decoded
#: image takes 3 bytes a pixel).
DEFAULT_MAX_PIXELS = 40_000_000
