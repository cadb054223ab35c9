"""Run the visionlake benchmarks; prints one JSON object per line.

    python bench/run.py [--quick] [--only NAME ...]

NAME is one of the keys of BENCHMARKS below (log, worker, memory, scaling, latency, live, replay, kafka,
catalog, pack, extract, vocab, encode, encodings, accuracy, hog, metrics, ...) or its module name.
`--quick` finishes in under 3 minutes on a 2-core machine; the full mode uses more frames and records.
The OPT_IN ones (encoding-accuracy: minutes even with --quick, over an hour in full) run only when
named with --only.
All data goes to one temporary directory, removed at the end. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # `import common` etc. whatever the working directory
sys.dont_write_bytecode = True  # write nothing next to the sources (no __pycache__ in bench/ or src/)

import common  # noqa: E402

BENCHMARKS = {
    "log": "log_throughput",
    "worker": "worker_throughput",
    "memory": "worker_memory",
    "scaling": "scaling",
    "latency": "latency",
    "live": "live_latency",
    "replay": "replay_sources",
    "kafka": "kafka_throughput",
    "catalog": "catalog_writes",
    "pack": "batch_pack",
    "extract": "batch_extract",
    "vocab": "batch_vocab",
    "encode": "batch_encode",
    "encodings": "batch_encodings",
    "accuracy": "batch_accuracy",
    "hog": "hog_accuracy",
    "tracking": "tracking_accuracy",
    "worker-tracking": "worker_tracking",
    "metrics": "worker_metrics",
    "reports": "reports",
    "faces": "face_identity",
    "encoding-accuracy": "encoding_accuracy",
}
#: Run only when named with --only (quick or full): they take far longer than the rest.
OPT_IN = {"encoding-accuracy"}
ALIASES = {**{v: k for k, v in BENCHMARKS.items()}, **{k: k for k in BENCHMARKS}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small N: all benchmarks in under 3 minutes")
    ap.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )
    args = ap.parse_args(argv)
    names = [n for n in BENCHMARKS if n not in OPT_IN]
    if args.only:
        bad = [n for n in args.only if n not in ALIASES]
        if bad:
            ap.error(f"unknown benchmark(s) {', '.join(bad)}; choose from {', '.join(BENCHMARKS)}")
        wanted = {ALIASES[n] for n in args.only}
        names = [n for n in BENCHMARKS if n in wanted]

    tmp = Path(tempfile.mkdtemp(prefix="visionlake-bench-"))
    t0 = time.perf_counter()
    failed = []
    try:
        for name in names:
            module = __import__(BENCHMARKS[name])
            t = time.perf_counter()
            common.say(
                f"== {name} ({'quick' if args.quick else 'full'}), load average {common.loadavg():.2f}"
            )
            try:
                module.run(args.quick, tmp / name)
            except Exception as e:  # one broken benchmark must not hide the others
                failed.append(name)
                common.say(f"{name} FAILED: {type(e).__name__}: {e}")
            common.say(f"{name} took {time.perf_counter() - t:.1f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    common.say(
        f"total {time.perf_counter() - t0:.1f} s" + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
