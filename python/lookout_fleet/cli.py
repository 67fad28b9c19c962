"""The `lookout-fleet` command: `run` (a manifest on a Ray cluster) and `report`."""

import argparse
import sys


def parser():
    p = argparse.ArgumentParser(
        prog="lookout-fleet",
        description="Replay lookout over many recorded drives on a Ray cluster, and report on the results.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="one Ray task per drive of MANIFEST, each `lookout batch MANIFEST --out DIR --drive ID`",
        description="Options not listed here (--weights, --model, --conf, --tracker, …) are passed "
        "to every drive's `lookout batch` unchanged.",
    )
    run.add_argument("manifest", metavar="MANIFEST", help="a `lookout batch` manifest, on storage every node reads")
    run.add_argument("--out", required=True, metavar="DIR", help="the result folder, on storage every node writes")
    run.add_argument("--address", default="auto", metavar="ADDR", help="the cluster, as ray.init takes it: auto, HOST:PORT, ray://HOST:PORT (default: auto)")
    run.add_argument("--cpus-per-drive", type=float, default=2, metavar="N", help="CPUs each drive's task asks Ray for; also lookout's --threads unless given (default: 2)")
    run.add_argument("--max-retries", type=int, default=2, metavar="N", help="retries of a drive whose worker, node or lookout process is lost (default: 2)")
    run.add_argument("--drives-per-task", type=int, default=1, metavar="N", help="drives one task runs one after another, for many short drives (default: 1)")
    run.add_argument("--lookout", default="lookout", metavar="PATH", help="the lookout binary on the workers (default: lookout on their PATH)")
    run.add_argument("--summary", metavar="FILE", help="also write which node ran each drive, as JSON")
    run.add_argument("--verbose", action="store_true", help="show the workers' logs")
    report = sub.add_parser("report", help="the fleet summary of a result folder: JSON and an HTML page")
    report.add_argument("dir", metavar="DIR", help="a result folder of `lookout batch` or `lookout-fleet run`")
    report.add_argument("--compare", metavar="OTHER", help="a second result folder (another model), side by side")
    report.add_argument("--json", metavar="FILE", help="where the JSON goes (default: DIR/report.json, or DIR/compare.json)")
    report.add_argument("--html", metavar="FILE", help="where the page goes (default: DIR/report.html, or DIR/compare.html)")
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = parser()
    args, rest = p.parse_known_args(argv)
    if args.command == "report":
        if rest:
            p.error(f"unknown options for report: {' '.join(rest)}")
        from . import report

        return report.run(args)
    if args.cpus_per_drive <= 0:
        p.error("--cpus-per-drive must be positive")
    if args.drives_per_task < 1:
        p.error("--drives-per-task must be at least 1")
    if args.max_retries < 0:
        p.error("--max-retries must be 0 or more")
    for forbidden in ("--out", "--drive", "--list", "--shard"):
        if any(a == forbidden or a.startswith(forbidden + "=") for a in rest):
            p.error(f"{forbidden} is lookout-fleet's own; drop it from the detector options")
    from . import fleet

    try:
        return fleet.run(args, rest)
    except KeyboardInterrupt:
        # The drives' tasks end with this driver; finished drives are whole and kept.
        print("lookout-fleet: interrupted; the same command resumes where this run stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
