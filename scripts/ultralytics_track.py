#!/usr/bin/env python3
"""Ultralytics' own BYTETracker over a MOTChallenge detection file: the anchor of `scripts/track-bench`.

Reads `frame,-1,x,y,w,h,score,...` (frames from 1), feeds every frame (empty ones too, so the tracker's frame count
and track buffer run as in a video) to `ultralytics.trackers.byte_tracker.BYTETracker` with the settings of
ultralytics' own `bytetrack.yaml`, and writes what it returns (its confirmed tracks of the frame, Kalman-updated
boxes, as `yolo track` reports them) as MOT (`frame,id,x,y,w,h,score,-1,-1,-1`) or KITTI tracking lines
(`frame id type -1 -1 -10 x1 y1 x2 y2 -1 -1 -1 -1000 -1000 -1000 -10 score`, frames from 0).

Needs the venv made by `scripts/track-bench --setup` (ultralytics, which imports torch even for the tracker).
"""

import argparse
import inspect
import sys
from pathlib import Path

import numpy as np


class Detections:
    """The results-like object BYTETracker.update consumes: `xywh` (centre x, centre y, w, h), `conf`, `cls`,
    `len()` and boolean-mask indexing, as `result.boxes.cpu().numpy()` gives it."""

    def __init__(self, xywh: np.ndarray, conf: np.ndarray, cls: np.ndarray):
        self.xywh, self.conf, self.cls = xywh, conf, cls

    @property
    def xyxy(self) -> np.ndarray:
        c, wh = self.xywh[:, :2], self.xywh[:, 2:4]
        return np.concatenate([c - wh / 2, c + wh / 2], axis=1)

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, index) -> "Detections":
        return Detections(self.xywh[index], self.conf[index], self.cls[index])


def read_mot_detections(path: Path) -> dict[int, Detections]:
    """Detections per frame (from 1) of a MOT detection file."""
    rows: dict[int, list[list[float]]] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(",")
        if len(fields) < 7:
            sys.exit(f"{path}:{number}: expected frame,-1,x,y,w,h,score,..., got {line!r}")
        frame = int(float(fields[0]))
        x, y, w, h, score = (float(v) for v in fields[2:7])
        rows.setdefault(frame, []).append([x + w / 2, y + h / 2, w, h, score])
    frames = {}
    for frame, boxes in rows.items():
        a = np.asarray(boxes, dtype=np.float32)
        frames[frame] = Detections(a[:, :4], a[:, 4], np.zeros(len(a), dtype=np.float32))
    return frames


def make_tracker(config: Path | None, frame_rate: int, track_buffer: int | None):
    from ultralytics.trackers.byte_tracker import BYTETracker
    from ultralytics.utils import YAML, IterableSimpleNamespace
    from ultralytics.utils.checks import check_yaml

    settings = YAML.load(str(config) if config else check_yaml("bytetrack.yaml"))
    if track_buffer is not None:
        settings["track_buffer"] = track_buffer
    args = IterableSimpleNamespace(**settings)
    # ultralytics up to 8.3 took `frame_rate` and scaled the buffer by frame_rate / 30; 8.4 counts it in frames.
    if "frame_rate" in inspect.signature(BYTETracker.__init__).parameters:
        return BYTETracker(args, frame_rate=frame_rate), settings
    return BYTETracker(args), settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detections", type=Path, required=True, help="MOT detection file, frames from 1")
    parser.add_argument("--out", type=Path, required=True, help="track file to write")
    parser.add_argument("--format", choices=["mot", "kitti"], default="mot")
    parser.add_argument("--class", dest="cls", default="Car", help="class written into KITTI lines")
    parser.add_argument("--frame-rate", type=int, default=10, help="passed to BYTETracker where it takes one")
    parser.add_argument("--tracker-config", type=Path, help="tracker YAML (default: ultralytics' bytetrack.yaml)")
    parser.add_argument("--track-buffer", type=int, help="override the YAML's track_buffer (frames)")
    parser.add_argument(
        "--boxes",
        choices=["kalman", "detection"],
        default="kalman",
        help="write the tracker's Kalman-updated box (as `yolo track` reports) or the matched detection's box",
    )
    args = parser.parse_args()

    import ultralytics

    frames = read_mot_detections(args.detections)
    tracker, settings = make_tracker(args.tracker_config, args.frame_rate, args.track_buffer)
    empty = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32))
    lines = []
    last = max(frames, default=0)
    for frame in range(1, last + 1):
        detections = frames.get(frame, empty)
        tracks = tracker.update(detections)
        for x1, y1, x2, y2, track_id, score, _cls, idx in tracks.reshape(-1, 8):
            if args.boxes == "detection":
                x1, y1, x2, y2 = detections.xyxy[int(idx)]
            if args.format == "mot":
                lines.append(
                    f"{frame},{int(track_id)},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{score:.4f},-1,-1,-1"
                )
            else:
                lines.append(
                    f"{frame - 1} {int(track_id)} {args.cls} -1 -1 -10 {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f}"
                    f" -1 -1 -1 -1000 -1000 -1000 -10 {score:.4f}"
                )
    args.out.write_text("".join(line + "\n" for line in lines))
    shown = {k: settings[k] for k in settings if k != "tracker_type"}
    print(
        f"ultralytics {ultralytics.__version__} BYTETracker {shown}: {len(lines)} track boxes in {last} frames"
        f" -> {args.out}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
