"""`lookout-fleet report`: the fleet summary of a result folder (what `lookout batch` and
`lookout-fleet run` write: DIR/<drive-id>/{done.json, detections.jsonl, metrics.json}),
per drive and in total: frames, detections per class group, latency p50/p99 per stage,
frame rate, failures with their errors. JSON, and one self-contained HTML page with inline
SVG plots (no scripts, no network). `--compare OTHER` puts two runs side by side, drive by
drive. Standard library only.
"""

import html
import json
import math
import os
import sys

# Per-frame stage times in detections.jsonl (`timing_ms`): the detector's and the tracker's.
STAGES = ("preprocess", "inference", "postprocess", "track")
GROUPS = ("pedestrian", "vehicle", "sign", "other")


def percentile(values, q):
    """Nearest-rank percentile (the sample at rank ceil(q·n)); None without samples."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _frame_stages(line):
    timing = line.get("timing_ms", {})
    return {s: timing.get(s) for s in STAGES}


class Unreadable(Exception):
    """A drive's file that cannot be read or parsed: that drive's error, not the report's."""


def _load(path, what):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise Unreadable(f"cannot read {what}: {e}") from None


def _drive(drive_id, status, error, record=None):
    """A drive's summary before its detections and metrics are read: what `record` (its
    done.json) says, nothing counted yet."""
    record = record or {}
    frames = record.get("frames", {})
    return {
        "id": drive_id,
        "status": status,
        "error": error,
        "source": record.get("source"),
        "model": record.get("model"),
        "weights_sha256": record.get("weights_sha256"),
        "frames": frames.get("processed", 0),
        "frames_in": frames.get("in", 0),
        "dropped": frames.get("dropped", 0),
        "duration_s": record.get("duration_s", 0.0),
        "detections": 0,
        "per_group": {g: 0 for g in GROUPS},
        "per_class": {},
        "latency_ms": {},
        "fps": None,
        "pipeline_ms": {},
        "samples": {s: [] for s in STAGES},
    }


def unreadable_drive(folder, error):
    """A drive whose files cannot be read, reported as failed with why."""
    return _drive(os.path.basename(folder), "unreadable", error)


def read_drive(folder):
    """One drive's result: its record, and what its detections and metrics files say.
    Raises Unreadable when one of them cannot be read or parsed."""
    record = _load(os.path.join(folder, "done.json"), "done.json")
    if not isinstance(record, dict):
        raise Unreadable("cannot read done.json: not a JSON object")
    drive = _drive(record.get("drive", os.path.basename(folder)), record.get("status"),
                   record.get("error"), record)
    jsonl = os.path.join(folder, "detections.jsonl")
    if os.path.exists(jsonl):
        try:
            with open(jsonl) as f:
                texts = f.readlines()
        except OSError as e:
            raise Unreadable(f"cannot read detections.jsonl: {e}") from None
        for number, text in enumerate(texts, 1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
                if not isinstance(line, dict):
                    raise ValueError("not a JSON object")
            except ValueError as e:
                raise Unreadable(f"cannot read detections.jsonl line {number}: {e}") from None
            for det in line.get("detections", []):
                drive["detections"] += 1
                group = det.get("group", "other")
                drive["per_group"][group] = drive["per_group"].get(group, 0) + 1
                name = det.get("class", str(det.get("class_id")))
                drive["per_class"][name] = drive["per_class"].get(name, 0) + 1
            for stage, ms in _frame_stages(line).items():
                if ms is not None:
                    drive["samples"][stage].append(ms)
    metrics = os.path.join(folder, "metrics.json")
    if os.path.exists(metrics):
        summary = _load(metrics, "metrics.json")
        drive["fps"] = summary.get("fps", {}).get("processed")
        # The run's own per-stage histograms (warm-up frames left out), every stage of the
        # pipeline and end to end.
        stages = dict(summary.get("stages", {}), end_to_end=summary.get("end_to_end", {}))
        drive["pipeline_ms"] = {
            name: {"p50": st.get("p50_ms"), "p99": st.get("p99_ms")}
            for name, st in stages.items()
            if st.get("count")
        }
    drive["latency_ms"] = latency(drive["samples"])
    return drive


def latency(samples):
    return {
        s: {"p50": percentile(v, 0.50), "p99": percentile(v, 0.99), "count": len(v)}
        for s, v in samples.items()
        if v
    }


def summarise(root):
    """Every drive under `root` (hidden folders — unfinished attempts — and folders without
    a done.json are not results) and the totals."""
    drives = []
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        if name.startswith(".") or not os.path.isfile(os.path.join(folder, "done.json")):
            continue
        try:
            drives.append(read_drive(folder))
        except Unreadable as e:
            print(f"lookout-fleet report: drive {name}: {e}", file=sys.stderr)
            drives.append(unreadable_drive(folder, str(e)))
    # Detections and latency from the drives that finished well: a failed drive's partial
    # detections are its own, not the run's.
    good = [d for d in drives if d["status"] == "ok"]
    pooled = {s: [v for d in good for v in d["samples"][s]] for s in STAGES}
    frames = sum(d["frames"] for d in drives)
    seconds = sum(d["duration_s"] for d in drives)
    per_group = {g: sum(d["per_group"].get(g, 0) for d in good) for g in GROUPS}
    total = {
        "drives": len(drives),
        "ok": sum(d["status"] == "ok" for d in drives),
        "failed": sum(d["status"] != "ok" for d in drives),
        "frames": frames,
        "dropped": sum(d["dropped"] for d in drives),
        "detections": sum(d["detections"] for d in good),
        "per_group": per_group,
        "latency_ms": latency(pooled),
        "drive_seconds": seconds,
        "fps": frames / seconds if seconds > 0 else None,
    }
    for d in drives:
        del d["samples"]
    return {
        "root": os.path.abspath(root),
        "drives": drives,
        "total": total,
        "failures": [{"id": d["id"], "error": d["error"]} for d in drives if d["status"] != "ok"],
    }


def compare(a, b):
    """Two summaries drive by drive: both sides' frames, detections per group and latency,
    and the drives only one side has."""
    by_a = {d["id"]: d for d in a["drives"]}
    by_b = {d["id"]: d for d in b["drives"]}
    rows = []
    for drive_id in sorted(set(by_a) | set(by_b)):
        da, db = by_a.get(drive_id), by_b.get(drive_id)

        def side(d):
            if d is None:
                return None
            return {
                "status": d["status"],
                "frames": d["frames"],
                "detections": d["detections"],
                "per_group": d["per_group"],
                "inference_p50_ms": d["latency_ms"].get("inference", {}).get("p50"),
                "inference_p99_ms": d["latency_ms"].get("inference", {}).get("p99"),
                "fps": d["fps"],
            }

        sa, sb = side(da), side(db)
        row = {"id": drive_id, "a": sa, "b": sb}
        if sa and sb:
            row["detections_delta"] = sb["detections"] - sa["detections"]
        rows.append(row)
    return {
        "a": a["root"],
        "b": b["root"],
        "drives": rows,
        "only_a": sorted(set(by_a) - set(by_b)),
        "only_b": sorted(set(by_b) - set(by_a)),
        "total": {"a": a["total"], "b": b["total"]},
    }


# --- HTML ---------------------------------------------------------------------------------

COLOURS = {"pedestrian": "#d62728", "vehicle": "#1f77b4", "sign": "#ff7f0e", "other": "#7f7f7f"}


def _fmt(x, digits=1):
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def bar_chart(title, labels, series, unit=""):
    """A grouped bar chart as inline SVG: `series` is [(name, colour, values)], one value
    per label (None for none)."""
    width, bar_h, gap, left = 720, 14, 8, 190
    per_label = bar_h * len(series) + gap
    height = 40 + per_label * max(1, len(labels)) + 24
    top = max([v for _, _, vs in series for v in vs if v is not None] or [1]) or 1
    scale = (width - left - 80) / top
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
        f'<text x="4" y="18" font-weight="bold">{html.escape(title)}</text>',
    ]
    for i, label in enumerate(labels):
        y0 = 32 + i * per_label
        parts.append(
            f'<text x="{left - 6}" y="{y0 + bar_h * len(series) / 2 + 4}" text-anchor="end">{html.escape(str(label))}</text>'
        )
        for j, (_, colour, values) in enumerate(series):
            v = values[i]
            if v is None:
                continue
            y = y0 + j * bar_h
            w = max(1.0, v * scale)
            parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h - 2}" fill="{colour}"/>')
            parts.append(f'<text x="{left + w + 4:.1f}" y="{y + bar_h - 4}" font-size="11">{_fmt(v)}{unit}</text>')
    legend_y = height - 8
    x = left
    for name, colour, _ in series:
        parts.append(f'<rect x="{x}" y="{legend_y - 10}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{x + 14}" y="{legend_y}" font-size="11">{html.escape(name)}</text>')
        x += 24 + 7 * len(name)
    parts.append("</svg>")
    return "\n".join(parts)


def _table(headers, rows):
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(c, 2))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


STYLE = (
    "body{font-family:sans-serif;margin:24px}table{border-collapse:collapse;margin:12px 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}"
    "td:first-child{text-align:left}.failed{color:#b00}svg{font-family:sans-serif;font-size:12px}"
)


def _page(title, body):
    return (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )


def summary_html(summary):
    drives, total = summary["drives"], summary["total"]
    ids = [d["id"] for d in drives]
    parts = [
        f"<p>{html.escape(summary['root'])}: {total['drives']} drives, {total['ok']} ok, "
        f"{total['failed']} failed; {total['frames']} frames, {total['detections']} detections, "
        f"{_fmt(total['fps'])} frames/s of drive time</p>"
    ]
    stages = [s for s in STAGES if s in total["latency_ms"]]
    parts.append("<h2>Totals</h2>")
    parts.append(
        _table(
            ["stage", "p50 ms", "p99 ms", "frames"],
            [[s, total["latency_ms"][s]["p50"], total["latency_ms"][s]["p99"], total["latency_ms"][s]["count"]] for s in stages],
        )
    )
    parts.append(_table(["class group", "detections"], [[g, total["per_group"][g]] for g in GROUPS]))
    parts.append("<h2>Per drive</h2>")
    parts.append(
        _table(
            ["drive", "status", "frames", "detections", *GROUPS, "fps", "inference p50", "inference p99", "end-to-end p50", "end-to-end p99"],
            [
                [
                    d["id"],
                    d["status"],
                    d["frames"],
                    d["detections"],
                    *[d["per_group"].get(g, 0) for g in GROUPS],
                    d["fps"],
                    d["latency_ms"].get("inference", {}).get("p50"),
                    d["latency_ms"].get("inference", {}).get("p99"),
                    d["pipeline_ms"].get("end_to_end", {}).get("p50"),
                    d["pipeline_ms"].get("end_to_end", {}).get("p99"),
                ]
                for d in drives
            ],
        )
    )
    parts.append(
        bar_chart(
            "Inference latency per drive (ms)",
            ids,
            [
                ("p50", "#1f77b4", [d["latency_ms"].get("inference", {}).get("p50") for d in drives]),
                ("p99", "#aec7e8", [d["latency_ms"].get("inference", {}).get("p99") for d in drives]),
            ],
        )
    )
    parts.append(
        bar_chart(
            "Detections per class group and drive",
            ids,
            [(g, COLOURS[g], [d["per_group"].get(g, 0) for d in drives]) for g in GROUPS],
        )
    )
    parts.append(bar_chart("Frame rate per drive (frames/s)", ids, [("fps", "#2ca02c", [d["fps"] for d in drives])]))
    if summary["failures"]:
        parts.append("<h2>Failures</h2><ul>")
        for f in summary["failures"]:
            parts.append(f"<li class='failed'><b>{html.escape(f['id'])}</b>: {html.escape(str(f['error']))}</li>")
        parts.append("</ul>")
    return _page("lookout fleet report", "\n".join(parts))


def compare_html(comparison):
    rows = comparison["drives"]
    ids = [r["id"] for r in rows]

    def get(side, key):
        return [r[side][key] if r[side] else None for r in rows]

    parts = [f"<p>A: {html.escape(comparison['a'])}<br>B: {html.escape(comparison['b'])}</p>"]
    table_rows = []
    for r in rows:
        a, b = r["a"] or {}, r["b"] or {}
        table_rows.append(
            [
                r["id"],
                a.get("status"),
                b.get("status"),
                a.get("frames"),
                b.get("frames"),
                a.get("detections"),
                b.get("detections"),
                r.get("detections_delta"),
                a.get("inference_p50_ms"),
                b.get("inference_p50_ms"),
            ]
        )
    parts.append(
        _table(
            ["drive", "status A", "status B", "frames A", "frames B", "detections A", "detections B", "Δ", "inference p50 A", "inference p50 B"],
            table_rows,
        )
    )
    parts.append(bar_chart("Detections per drive", ids, [("A", "#1f77b4", get("a", "detections")), ("B", "#ff7f0e", get("b", "detections"))]))
    parts.append(
        bar_chart(
            "Inference p50 per drive (ms)",
            ids,
            [("A", "#1f77b4", get("a", "inference_p50_ms")), ("B", "#ff7f0e", get("b", "inference_p50_ms"))],
        )
    )
    for side, only in (("A", comparison["only_a"]), ("B", comparison["only_b"])):
        if only:
            parts.append(f"<p>Only in {side}: {html.escape(', '.join(only))}</p>")
    return _page("lookout fleet comparison", "\n".join(parts))


def run(args):
    """`lookout-fleet report`; returns the exit status."""
    if not os.path.isdir(args.dir):
        print(f"lookout-fleet report: {args.dir} is not a folder (a `lookout batch --out` folder)")
        return 2
    summary = summarise(args.dir)
    result, page = summary, summary_html(summary)
    if args.compare:
        if not os.path.isdir(args.compare):
            print(f"lookout-fleet report: --compare {args.compare} is not a folder")
            return 2
        result = compare(summary, summarise(args.compare))
        page = compare_html(result)
    json_path = args.json or os.path.join(args.dir, "compare.json" if args.compare else "report.json")
    html_path = args.html or os.path.join(args.dir, "compare.html" if args.compare else "report.html")
    with open(json_path, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    with open(html_path, "w") as f:
        f.write(page)
    print(f"report: {json_path}\nreport: {html_path}")
    return 0
