"""Default resource limits, in a module light enough for the CLI to import at start-up."""

#: Pixels a worker decodes at most per frame unless told otherwise (8K video is 33 MP; the decoded
#: image takes 3 bytes a pixel).
DEFAULT_MAX_PIXELS = 40_000_000

#: Most partitions a topic may have: Kafka's practical limit is a few thousand per broker, and the
#: embedded log makes a folder and index rows for each (10**8 took 11 minutes and 10 GB).
MAX_PARTITIONS = 10_000

#: Default cap on the bytes of one user SQL result, beside the row cap: a row cap alone lets one
#: `SELECT zeroblob(10**9)` take gigabytes.
DEFAULT_QUERY_MAX_BYTES = 64 * 1024**2
