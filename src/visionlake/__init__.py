"""visionlake: a data platform for computer vision.

Frames flow from cameras, videos and image folders onto a partitioned frame log; detector workers in
consumer groups process them; images go to an archive and metadata, model versions and detections to
a SQL catalog. `Lake` is the one entry point the CLI and other tools use.
"""

__version__ = "0.1.0"
