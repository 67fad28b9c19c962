"""Reference tracking metrics for `lookout eval track` (run by scripts/track-eval-reference).

Writes tests/data/track_eval/:
- predictions made deterministically from the KITTI tracking fixtures (the ground truth
  perturbed: jitter, dropped boxes and runs, broken and swapped ids, class confusions, false
  positives), and tiny hand-made cases (an ID switch, a fragmentation, an empty prediction,
  ...), as KITTI or MOTChallenge files;
- reference.json: for every case, per class and overall, CLEAR and identity metrics from
  py-motmetrics (`MOTAccumulator` + `metrics.create().compute`) and HOTA from TrackEval
  (`HOTA.eval_sequence`, classes combined by `combine_classes_det_averaged`);
- lsap_scipy.json: small tie-heavy cost matrices with SciPy's and motmetrics' assignments.

The files are read as lookout reads them (src/trackfile.rs: MOT frames from 1, KITTI from 0,
DontCare and consider=0 rows ignored, numbers stored as f32) and grouped into classes as
src/track_eval/mod.rs documents; the metrics themselves come from the two tools. Each case is
also computed on float64 boxes, and the largest difference that makes is printed.
"""

import json
import math
import os
import sys
from pathlib import Path

import numpy as np

import motmetrics as mm
from motmetrics import lap as mm_lap
from scipy.optimize import linear_sum_assignment
import trackeval
from trackeval.datasets._base_dataset import _BaseDataset
from trackeval.metrics import HOTA

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "track_eval"
FIXTURES = Path(os.environ.get("LOOKOUT_FIXTURES", ROOT.parent / "shared" / "fixtures"))
SEQUENCES = ["0000", "0005", "0016"]

MOTMETRICS = [
    "num_matches", "num_switches", "num_false_positives", "num_misses", "num_detections",
    "num_objects", "num_predictions", "num_unique_objects", "mostly_tracked",
    "partially_tracked", "mostly_lost", "num_fragmentations", "num_transfer", "num_ascend",
    "num_migrate", "motp", "mota", "precision", "recall", "idfp", "idfn", "idtp", "idp", "idr",
    "idf1",
]
# motmetrics name -> lookout's JSON key
RENAME = {
    "num_switches": "id_switches",
    "num_fragmentations": "fragmentations",
    "num_objects": "num_gt",
    "num_predictions": "num_pred",
}
HOTA_FIELDS = {
    "hota": "HOTA", "deta": "DetA", "assa": "AssA", "loca": "LocA", "detre": "DetRe",
    "detpr": "DetPr", "assre": "AssRe", "asspr": "AssPr", "owta": "OWTA",
}


# ----------------------------------------------------------------------------- reading
class Row:
    __slots__ = ("frame", "id", "cls", "box", "ignore")

    def __init__(self, frame, tid, cls, box, ignore):
        self.frame, self.id, self.cls, self.box, self.ignore = frame, tid, cls, box, ignore


def read_rows(path, as_f32=True):
    """A tracking file as lookout's trackfile::read gives it."""
    rows, fmt = [], None
    text = Path(path).read_text(encoding="utf-8")
    for raw in text.split("\n"):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if fmt is None:
            fmt = "mot" if "," in line else "kitti"
        if fmt == "mot":
            f = [x.strip() for x in line.split(",")]
            frame = int(float(f[0])) - 1
            tid = int(float(f[1]))
            x, y, w, h = (float(v) for v in f[2:6])
            conf = float(f[6])
            cls = None
            if len(f) >= 8:
                v = float(f[7])
                cls = None if v == -1 else (str(int(v)) if v.is_integer() else f[7])
            ignore = cls is not None and conf == 0.0
            box = (x, y, x + w, y + h)
        else:
            f = line.split()
            frame, tid, cls = int(float(f[0])), int(float(f[1])), f[2]
            box = tuple(float(v) for v in f[6:10])
            ignore = cls.lower() == "dontcare"
        if as_f32:
            box = tuple(float(np.float32(v)) for v in box)
        rows.append(Row(frame, tid, cls, box, ignore))
    return rows


def class_key(name):
    key = "".join("_" if c.isspace() else c.lower() for c in name.strip())
    return "pedestrian" if key == "person" else key


def groups(gt, pred, classes):
    """Class key -> (gt rows, pred rows), as track_eval::evaluate groups them."""
    gt = [r for r in gt if not r.ignore]
    pred = [r for r in pred if not r.ignore]
    requested = sorted(set(class_key(c) for c in classes)) if classes else None
    agnostic = any(r.cls is None for r in gt) or any(r.cls is None for r in pred)
    if agnostic:
        def keep(r):
            return requested is None or r.cls is None or class_key(r.cls) in requested
        return {"all": ([r for r in gt if keep(r)], [r for r in pred if keep(r)])}
    keys = requested if requested else sorted(set(class_key(r.cls) for r in gt))
    return {
        k: ([r for r in gt if class_key(r.cls) == k], [r for r in pred if class_key(r.cls) == k])
        for k in keys
    }


def by_frame(rows):
    frames = {}
    for r in rows:
        frames.setdefault(r.frame, []).append(r)
    return frames


# ----------------------------------------------------------------------------- metrics
def xywh(rows):
    return np.array([[r.box[0], r.box[1], r.box[2] - r.box[0], r.box[3] - r.box[1]] for r in rows],
                    dtype=float).reshape(-1, 4)


def xyxy(rows):
    return np.array([r.box for r in rows], dtype=float).reshape(-1, 4)


def accumulate(class_groups, iou):
    """One MOTAccumulator over the given classes, ids made distinct per class and pairs
    across classes forbidden (NaN). With one class it is that class's accumulator."""
    acc = mm.MOTAccumulator(auto_id=False)
    per_class = [(k, by_frame(g), by_frame(p)) for k, (g, p) in enumerate(class_groups)]
    frames = sorted(set(f for _, g, p in per_class for f in list(g) + list(p)))
    for frame in frames:
        oids, hids, blocks = [], [], []
        for k, g, p in per_class:
            grows, prows = g.get(frame, []), p.get(frame, [])
            oids += [k * 10_000_000 + r.id for r in grows]
            hids += [k * 10_000_000 + r.id for r in prows]
            d = mm.distances.iou_matrix(xywh(grows), xywh(prows), max_iou=1.0 - iou)
            blocks.append(d.reshape(len(grows), len(prows)))
        dist = np.full((len(oids), len(hids)), np.nan)
        r0 = c0 = 0
        for b in blocks:
            dist[r0:r0 + b.shape[0], c0:c0 + b.shape[1]] = b
            r0, c0 = r0 + b.shape[0], c0 + b.shape[1]
        acc.update(oids, hids, dist, frameid=frame)
    return acc


def motmetrics_summary(acc):
    mh = mm.metrics.create()
    return mh.compute(acc, metrics=MOTMETRICS, return_dataframe=False, return_cached=True)


def hota_sequence(gt, pred):
    g, p = by_frame(gt), by_frame(pred)
    frames = sorted(set(g) | set(p))
    gt_unique = np.unique([r.id for r in gt]).astype(int)
    pr_unique = np.unique([r.id for r in pred]).astype(int)
    gmap = {int(v): i for i, v in enumerate(gt_unique)}
    pmap = {int(v): i for i, v in enumerate(pr_unique)}
    data = {"gt_ids": [], "tracker_ids": [], "similarity_scores": []}
    for frame in frames:
        grows, prows = g.get(frame, []), p.get(frame, [])
        data["gt_ids"].append(np.array([gmap[r.id] for r in grows], dtype=int))
        data["tracker_ids"].append(np.array([pmap[r.id] for r in prows], dtype=int))
        data["similarity_scores"].append(
            _BaseDataset._calculate_box_ious(xyxy(grows), xyxy(prows), box_format="x0y0x1y1"))
    data.update(num_timesteps=len(frames), num_gt_dets=len(gt), num_tracker_dets=len(pred),
                num_gt_ids=len(gt_unique), num_tracker_ids=len(pr_unique))
    return HOTA().eval_sequence(data)


def number(v):
    v = float(v)
    return v if math.isfinite(v) else None


def metrics_json(summary, hota_res):
    out = {}
    for name in MOTMETRICS:
        out[RENAME.get(name, name)] = number(summary[name])
    for key, field in HOTA_FIELDS.items():
        out[key] = number(np.mean(hota_res[field]))
    out["hota0"] = number(hota_res["HOTA(0)"])
    out["loca0"] = number(hota_res["LocA(0)"])
    out["hotaloca0"] = number(hota_res["HOTALocA(0)"])
    return out


def evaluate(gt_path, pred_path, iou, classes, as_f32=True):
    gt, pred = read_rows(gt_path, as_f32), read_rows(pred_path, as_f32)
    class_groups = groups(gt, pred, classes)
    result = {"classes": {}}
    partials, hota_parts = [], {}
    for key, (g, p) in class_groups.items():
        summary = motmetrics_summary(accumulate([(g, p)], iou))
        partials.append(summary)
        hota_parts[key] = hota_sequence(g, p)
        result["classes"][key] = metrics_json(summary, hota_parts[key])
    # Overall: one accumulator over all classes (class-consistent pairs only) ...
    overall = motmetrics_summary(accumulate(list(class_groups.values()), iou))
    # ... which must equal motmetrics' OVERALL over the per-class partials (whose motp is
    # NaN when some class has no match; lookout's is Σ distance / Σ matches, as here).
    if partials:
        mh = mm.metrics.create()
        merged = mh.compute_overall(partials, metrics=MOTMETRICS, return_dataframe=False)
        for name in MOTMETRICS:
            a, b = float(overall[name]), float(merged[name])
            if name == "motp" and math.isnan(b):
                continue
            if not (a == b or (math.isnan(a) and math.isnan(b)) or abs(a - b) < 1e-9):
                sys.exit(f"{gt_path}: {name}: one accumulator {a} != OVERALL of classes {b}")
    hota_overall = HOTA().combine_classes_det_averaged(hota_parts) if hota_parts else \
        HOTA().eval_sequence({"num_tracker_dets": 0, "num_gt_dets": 0})
    result["overall"] = metrics_json(overall, hota_overall)
    return result


# ----------------------------------------------------------------------------- predictions
KITTI_LINE = "{} {} {} -1 -1 -10 {:.2f} {:.2f} {:.2f} {:.2f} -1 -1 -1 -1000 -1000 -1000 -10 {:.4f}\n"
MOT_LINE = "{},{},{:.2f},{:.2f},{:.2f},{:.2f},{:.4f},-1,-1,-1\n"


def perturb(gt_path, seed):
    """The gt's tracks as a flawed tracker would report them: (frame, id, type, box, score)."""
    rng = np.random.default_rng(seed)
    rows = [r for r in read_rows(gt_path, as_f32=False) if not r.ignore]
    tracks = {}
    for r in rows:
        tracks.setdefault(r.id, []).append(r)
    next_id = [1000]

    def new_id():
        next_id[0] += int(rng.integers(1, 4))
        return next_id[0]

    out = []
    track_ids = sorted(tracks)
    pred_id_of = {tid: new_id() for tid in track_ids}
    # Id swaps between two tracks from a frame on, and id breaks.
    swaps = {}
    for _ in range(max(1, len(track_ids) // 6)):
        a, b = rng.choice(track_ids, 2, replace=False)
        frames_a = {r.frame for r in tracks[a]} & {r.frame for r in tracks[b]}
        if frames_a:
            swaps[(int(a), int(b))] = int(rng.choice(sorted(frames_a)))
    for tid in track_ids:
        rs = sorted(tracks[tid], key=lambda r: r.frame)
        confused = rs[0].cls == "Van" and rng.random() < 0.3
        break_at = rs[int(rng.integers(0, len(rs)))].frame if rng.random() < 0.3 else None
        gap = None
        if rng.random() < 0.35 and len(rs) > 6:
            start = int(rng.integers(1, len(rs) - 3))
            gap = (rs[start].frame, rs[start].frame + int(rng.integers(2, 7)))
        pid = pred_id_of[tid]
        for r in rs:
            if break_at is not None and r.frame == break_at:
                pid = new_id()
            if gap and gap[0] <= r.frame < gap[1]:
                continue
            if rng.random() < 0.07:
                continue
            x1, y1, x2, y2 = r.box
            w, h = x2 - x1, y2 - y1
            s = 0.04 if rng.random() < 0.9 else 0.3
            cx = (x1 + x2) / 2 + rng.normal(0, s) * w
            cy = (y1 + y2) / 2 + rng.normal(0, s) * h
            w *= math.exp(rng.normal(0, s))
            h *= math.exp(rng.normal(0, s))
            out.append([r.frame, tid, pid, "Car" if confused else r.cls,
                        (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2),
                        float(rng.uniform(0.3, 1.0))])
    # Apply swaps: from the swap frame on, a's boxes carry b's id and the other way round.
    for (a, b), frame in swaps.items():
        for row in out:
            if row[0] >= frame and row[1] in (a, b):
                row[2] = pred_id_of[b] if row[1] == a else pred_id_of[a]
        pred_id_of[a], pred_id_of[b] = pred_id_of[b], pred_id_of[a]
    # Keep ids unique per frame after swaps (a swapped id may meet a broken one).
    seen, unique = set(), []
    for row in out:
        if (row[0], row[2]) not in seen:
            seen.add((row[0], row[2]))
            unique.append(row)
    out = unique
    # False positives: short tracks of random boxes.
    last = max(r.frame for r in rows)
    classes = sorted({r.cls for r in rows})
    for _ in range(int(last * 0.15)):
        fid, start = new_id(), int(rng.integers(0, last + 1))
        cls = str(rng.choice(classes))
        w, h = float(rng.uniform(20, 150)), float(rng.uniform(20, 150))
        x, y = float(rng.uniform(0, 1242 - w)), float(rng.uniform(100, 375 - h))
        for frame in range(start, min(last, start + int(rng.integers(1, 6))) + 1):
            x += float(rng.normal(0, 3))
            out.append([frame, None, fid, cls, (x, y, x + w, y + h), float(rng.uniform(0.1, 0.6))])
    out.sort(key=lambda r: (r[0], r[2]))
    return [(f, pid, cls, box, score) for f, _, pid, cls, box, score in out]


def write_kitti(path, rows):
    with open(path, "w") as f:
        for frame, pid, cls, (x1, y1, x2, y2), score in rows:
            f.write(KITTI_LINE.format(frame, pid, cls, x1, y1, x2, y2, score))


def write_mot(path, rows):
    with open(path, "w") as f:
        for frame, pid, _cls, (x1, y1, x2, y2), score in rows:
            f.write(MOT_LINE.format(frame + 1, pid, x1, y1, x2 - x1, y2 - y1, score))


# ----------------------------------------------------------------------------- tiny cases
def mot(rows):
    return "".join(",".join(str(v) for v in r) + "\n" for r in rows)


def kitti(rows):
    return "".join(
        f"{fr} {tid} {cls} 0 0 -10 {x1} {y1} {x2} {y2} -1 -1 -1 -1000 -1000 -1000 -10\n"
        for fr, tid, cls, x1, y1, x2, y2 in rows)


def tiny_cases():
    """name -> (gt text, pred text, iou, classes): each checks one rule."""
    cases = {}
    # Two objects side by side; the tracker swaps their ids at frame 4: two switches.
    gt = [(f, i, 100 * i + 2 * f, 50, 40, 80, 1, -1, -1, -1) for f in range(1, 7) for i in (1, 2)]
    pred = [(f, (i if f < 4 else 3 - i), 100 * i + 2 * f + 1, 51, 40, 80, 0.9, -1, -1, -1)
            for f in range(1, 7) for i in (1, 2)]
    cases["id-switch"] = (mot(gt), mot(pred), 0.5, None)
    # One object lost for frames 4-5 and found again (a fragmentation), another lost at the
    # end (none), a third missed at the start (none).
    gt = [(f, i, 100 * i, 50, 40, 80, 1, -1, -1, -1) for f in range(1, 9) for i in (1, 2, 3)]
    pred = [(f, 10 + i, 100 * i + 2, 50, 40, 80, 0.9, -1, -1, -1) for f in range(1, 9) for i in (1, 2, 3)
            if not (i == 1 and f in (4, 5)) and not (i == 2 and f > 6) and not (i == 3 and f < 3)]
    cases["fragmentation"] = (mot(gt), mot(pred), 0.5, None)
    # Nothing predicted.
    gt = [(0, 0, "Car", 10, 10, 60, 40), (0, 1, "Pedestrian", 200, 20, 230, 90),
          (0, -1, "DontCare", 300, 10, 350, 40), (1, 0, "Car", 12, 10, 62, 40)]
    cases["empty-prediction"] = (kitti(gt), "", 0.5, None)
    # A hypothesis that moves from object 0 to object 1 (transfer), a new one taking object 0
    # over (a switch to an unseen hypothesis: ascend), DontCare rows on both sides, class
    # names that differ only in case and alias (person / Pedestrian).
    gt = [(f, 0, "Car", 10 + f, 10, 60 + f, 40) for f in range(6)] + \
         [(f, 1, "Car", 300, 10, 350, 40) for f in range(6)] + \
         [(f, 2, "Pedestrian", 500, 20, 530, 90) for f in range(6)] + \
         [(f, -1, "DontCare", 700, 10, 750, 40) for f in range(6)]
    pred = [(f, 5, "car", 10 + f, 11, 60 + f, 41) for f in range(3)] + \
           [(f, 5, "car", 301, 10, 351, 40) for f in range(3, 6)] + \
           [(f, 6, "car", 10 + f, 10, 61 + f, 40) for f in range(3, 6)] + \
           [(f, 7, "person", 501, 20, 531, 91) for f in range(6)] + \
           [(f, 8, "DontCare", 700, 10, 750, 40) for f in range(6)]
    gt.sort()
    pred.sort()
    cases["transfer-ignore-alias"] = (kitti(gt), kitti(pred), 0.5, None)
    # Two objects on the same box and two hypotheses on the same box: equal-cost
    # assignments, resolved by SciPy's tie rules; they part at frame 3, hypothesis 21 with
    # object 2: whether that is two switches or none depends on how frame 1's tie went.
    gt = [(f, i, 100 if f < 3 else 100 + 60 * (i - 1), 50, 40, 80, 1, -1, -1, -1)
          for f in range(1, 6) for i in (1, 2)]
    pred = [(f, 20 + i, 100 if f < 3 else 100 + 60 * (2 - i), 50, 40, 80, 1, -1, -1, -1)
            for f in range(1, 6) for i in (1, 2)]
    cases["ties"] = (mot(gt), mot(pred), 0.5, None)
    # IoU exactly 0.5 is a match for CLEAR (distance 0.5 <= 0.5) and for HOTA at alpha 0.5.
    gt = [(1, 1, 0, 0, 10, 10, 1, -1, -1, -1), (1, 2, 100, 0, 10, 10, 1, -1, -1, -1),
          (2, 1, 0, 0, 10, 10, 1, -1, -1, -1), (2, 2, 100, 0, 10, 10, 1, -1, -1, -1)]
    pred = [(1, 1, 0, 0, 20, 10, 1, -1, -1, -1), (1, 2, 100, 0, 10, 21, 1, -1, -1, -1),
            (2, 1, 0, 0, 20, 10, 1, -1, -1, -1), (2, 2, 100, 0, 10, 20, 1, -1, -1, -1)]
    cases["iou-boundary"] = (mot(gt), mot(pred), 0.5, None)
    # A MOTChallenge gt.txt (class and consider columns): rows with consider = 0 are ignored.
    gt = [(f, 1, 10 + f, 10, 30, 60, 1, 1, 1.0) for f in range(1, 6)] + \
         [(f, 2, 200, 10, 30, 60, 0, 7, 1.0) for f in range(1, 6)] + \
         [(f, 3, 400, 10, 30, 60, 1, 1, 0.5) for f in range(1, 6)]
    pred = [(f, 1, 11 + f, 10, 30, 60, 0.8, -1, -1, -1) for f in range(1, 6)] + \
           [(f, 2, 200, 10, 30, 60, 0.8, -1, -1, -1) for f in range(1, 6)] + \
           [(f, 3, 400, 12, 30, 60, 0.8, -1, -1, -1) for f in range(1, 4)]
    gt.sort()
    pred.sort()
    cases["mot-gt-consider"] = (mot(gt), mot(pred), 0.5, None)
    return cases


def lsap_cases(rng):
    scipy_cases, mm_cases = [], []
    for _ in range(150):
        rows, cols = int(rng.integers(1, 7)), int(rng.integers(1, 7))
        cost = rng.integers(0, 3, size=(rows, cols)).astype(float)
        r, c = linear_sum_assignment(cost)
        scipy_cases.append({"rows": rows, "cols": cols, "cost": cost.ravel().tolist(),
                            "pairs": [[int(a), int(b)] for a, b in zip(r, c)]})
    with mm_lap.set_default_solver("scipy"):
        for _ in range(150):
            rows, cols = int(rng.integers(1, 7)), int(rng.integers(1, 7))
            cost = np.round(rng.uniform(0, 0.5, size=(rows, cols)), 1)
            cost[rng.random((rows, cols)) < 0.4] = np.nan
            r, c = mm_lap.linear_sum_assignment(cost)
            mm_cases.append({"rows": rows, "cols": cols,
                             "cost": [None if math.isnan(v) else v for v in cost.ravel().tolist()],
                             "pairs": [[int(a), int(b)] for a, b in zip(r, c)]})
    return {"scipy": scipy_cases, "motmetrics": mm_cases}


# ----------------------------------------------------------------------------- main
def max_diff(a, b):
    worst = 0.0
    for part in ("overall",):
        for k, v in a[part].items():
            w = b[part][k]
            if v is not None and w is not None:
                worst = max(worst, abs(v - w))
    for cls, values in a["classes"].items():
        for k, v in values.items():
            w = b["classes"][cls][k]
            if v is not None and w is not None:
                worst = max(worst, abs(v - w))
    return worst


def main():
    assert mm.lap.default_solver == "scipy", mm.lap.default_solver
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "tiny").mkdir(exist_ok=True)
    label_dir = FIXTURES / "kitti" / "tracking" / "label_02"
    if not label_dir.is_dir():
        sys.exit(f"fixtures not found at {label_dir} (set LOOKOUT_FIXTURES)")

    cases = []
    for k, seq in enumerate(SEQUENCES):
        rows = perturb(label_dir / f"{seq}.txt", seed=1000 + k)
        if seq == "0005":
            write_mot(OUT / f"pred-{seq}-mot.txt", rows)
            cases.append((f"kitti-{seq}-mot-agnostic", ("fixture", f"kitti/tracking/label_02/{seq}.txt"),
                          ("data", f"pred-{seq}-mot.txt"), 0.5, None))
        write_kitti(OUT / f"pred-{seq}.txt", rows)
        cases.append((f"kitti-{seq}", ("fixture", f"kitti/tracking/label_02/{seq}.txt"),
                      ("data", f"pred-{seq}.txt"), 0.5, None))
    cases.append(("kitti-0016-car-pedestrian", ("fixture", "kitti/tracking/label_02/0016.txt"),
                  ("data", "pred-0016.txt"), 0.5, ["Car", "pedestrian"]))
    cases.append(("kitti-0000-iou0.3", ("fixture", "kitti/tracking/label_02/0000.txt"),
                  ("data", "pred-0000.txt"), 0.3, None))
    for name, (gt_text, pred_text, iou, classes) in tiny_cases().items():
        ext = "txt"
        (OUT / "tiny" / f"{name}-gt.{ext}").write_text(gt_text)
        (OUT / "tiny" / f"{name}-pred.{ext}").write_text(pred_text)
        cases.append((name, ("data", f"tiny/{name}-gt.{ext}"), ("data", f"tiny/{name}-pred.{ext}"),
                      iou, classes))

    def resolve(where):
        kind, rel = where
        return (label_dir.parent.parent.parent / rel) if kind == "fixture" else (OUT / rel)

    out_cases, worst64 = [], 0.0
    for name, gt, pred, iou, classes in cases:
        result = evaluate(resolve(gt), resolve(pred), iou, classes)
        as64 = evaluate(resolve(gt), resolve(pred), iou, classes, as_f32=False)
        d = max_diff(result, as64)
        worst64 = max(worst64, d)
        o = result["overall"]
        print(f"{name:28} MOTA {o['mota']!s:.8} MOTP {o['motp']!s:.8} IDF1 {o['idf1']!s:.8} "
              f"HOTA {o['hota']!s:.8} IDSW {o['id_switches']} Frag {o['fragmentations']} "
              f"(f64 boxes: max |d| {d:.2e})")
        out_cases.append({"name": name, "gt": {gt[0]: gt[1]}, "pred": {pred[0]: pred[1]},
                          "iou": iou, "class_filter": classes, **result})
    reference = {
        "generated_by": "scripts/track-eval-reference",
        "tools": {"motmetrics": mm.__version__, "trackeval": trackeval.__version__,
                  "numpy": np.__version__, "scipy": __import__("scipy").__version__,
                  "pandas": __import__("pandas").__version__},
        "boxes": "f32 as lookout reads them; float64 boxes change no value by more than "
                 f"{worst64:.1e}",
        "cases": out_cases,
    }
    (OUT / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    (OUT / "lsap_scipy.json").write_text(json.dumps(lsap_cases(np.random.default_rng(7))) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}: {len(out_cases)} cases; f64 vs f32 boxes: max |d| {worst64:.2e}")


if __name__ == "__main__":
    main()
