"""Unit tests of the fleet report on result folders made here (no Ray, no lookout)."""

import contextlib
import io
import json
import os
import socket
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from lookout_fleet import cli, fleet, report  # noqa: E402


def write_drive(root, drive_id, frames, status="ok", error=None, fps=10.0):
    """A drive folder as `lookout batch` writes it: `frames` is a list of (inference ms,
    [group, ...]) per frame."""
    folder = os.path.join(root, drive_id)
    os.makedirs(folder)
    with open(os.path.join(folder, "done.json"), "w") as f:
        json.dump(
            {
                "drive": drive_id,
                "status": status,
                "error": error,
                "source": f"/d/{drive_id}.mp4",
                "frames": {"in": len(frames), "processed": len(frames), "dropped": 0},
                "duration_s": len(frames) / fps if frames else 0.5,
                "weights_sha256": "ab",
            },
            f,
        )
    with open(os.path.join(folder, "detections.jsonl"), "w") as f:
        for seq, (inference, groups) in enumerate(frames):
            dets = [{"class": "car" if g == "vehicle" else "person", "group": g, "score": 0.9} for g in groups]
            line = {
                "seq": seq,
                "detections": dets,
                "timing_ms": {"preprocess": 1.0, "inference": inference, "postprocess": 0.5, "track": 0.1},
            }
            f.write(json.dumps(line) + "\n")
    with open(os.path.join(folder, "metrics.json"), "w") as f:
        json.dump(
            {
                "fps": {"processed": fps},
                "stages": {"capture": {"count": 3, "p50_ms": 2.0, "p99_ms": 4.0}, "render": {"count": 0}},
                "end_to_end": {"count": 3, "p50_ms": 30.0, "p99_ms": 45.0},
            },
            f,
        )


class Percentiles(unittest.TestCase):
    def test_nearest_rank(self):
        values = list(range(1, 101))
        self.assertEqual(report.percentile(values, 0.5), 50)
        self.assertEqual(report.percentile(values, 0.99), 99)
        self.assertEqual(report.percentile([7.0], 0.99), 7.0)
        self.assertEqual(report.percentile([3, 1, 2], 0.5), 2)
        self.assertIsNone(report.percentile([], 0.5))


class Summary(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = self.tmp.name
        write_drive(self.root, "a", [(10.0, ["vehicle", "vehicle"]), (20.0, ["pedestrian"]), (30.0, [])])
        write_drive(self.root, "b", [(40.0, ["vehicle"])], fps=5.0)
        write_drive(self.root, "bad", [], status="failed", error="ffmpeg failed on video bad.mp4")
        # An unfinished attempt and a folder without done.json are not results.
        os.makedirs(os.path.join(self.root, ".partial", "c.host.1"))
        os.makedirs(os.path.join(self.root, "half"))

    def tearDown(self):
        self.tmp.cleanup()

    def test_per_drive_and_totals(self):
        s = report.summarise(self.root)
        self.assertEqual([d["id"] for d in s["drives"]], ["a", "b", "bad"])
        a = s["drives"][0]
        self.assertEqual(a["frames"], 3)
        self.assertEqual(a["detections"], 3)
        self.assertEqual(a["per_group"], {"pedestrian": 1, "vehicle": 2, "sign": 0, "other": 0})
        self.assertEqual(a["latency_ms"]["inference"], {"p50": 20.0, "p99": 30.0, "count": 3})
        self.assertEqual(a["fps"], 10.0)
        # The run's own stage histograms from metrics.json; stages without samples left out.
        self.assertEqual(
            a["pipeline_ms"], {"capture": {"p50": 2.0, "p99": 4.0}, "end_to_end": {"p50": 30.0, "p99": 45.0}}
        )
        t = s["total"]
        self.assertEqual((t["drives"], t["ok"], t["failed"]), (3, 2, 1))
        self.assertEqual(t["frames"], 4)
        self.assertEqual(t["per_group"]["vehicle"], 3)
        # Pooled over every frame of every drive, not an average of the drives' percentiles.
        self.assertEqual(t["latency_ms"]["inference"]["p50"], 20.0)
        self.assertEqual(t["latency_ms"]["inference"]["p99"], 40.0)
        self.assertAlmostEqual(t["fps"], 4 / (0.3 + 0.2 + 0.5))
        self.assertEqual(s["failures"], [{"id": "bad", "error": "ffmpeg failed on video bad.mp4"}])

    def test_a_corrupt_drive_is_one_line_and_failed_drives_add_no_detections(self):
        write_drive(self.root, "partial", [(50.0, ["vehicle", "vehicle"])], status="failed", error="input ended early")
        write_drive(self.root, "torn", [(10.0, ["vehicle"])])
        with open(os.path.join(self.root, "torn", "detections.jsonl"), "a") as f:
            f.write('{"seq": 1, "detec\n')
        write_drive(self.root, "broken", [(10.0, [])])
        with open(os.path.join(self.root, "broken", "done.json"), "w") as f:
            f.write("{not json")
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            s = report.summarise(self.root)
        lines = err.getvalue().strip().splitlines()
        self.assertEqual(len(lines), 2, err.getvalue())
        self.assertTrue(lines[0].startswith("lookout-fleet report: drive broken: cannot read done.json"), lines[0])
        self.assertTrue(lines[1].startswith("lookout-fleet report: drive torn: cannot read detections.jsonl line 2"), lines[1])
        by_id = {d["id"]: d for d in s["drives"]}
        self.assertEqual(by_id["torn"]["status"], "unreadable")
        t = s["total"]
        self.assertEqual((t["drives"], t["ok"], t["failed"]), (6, 2, 4))
        # a's 3 and b's 1: the failed drive's two partial detections are not the run's.
        self.assertEqual(t["detections"], 4)
        self.assertEqual(t["per_group"]["vehicle"], 3)
        self.assertEqual(t["latency_ms"]["inference"]["p99"], 40.0)
        self.assertIn({"id": "partial", "error": "input ended early"}, s["failures"])

    def test_compare_pairs_drives_and_names_the_ones_only_one_side_has(self):
        other = tempfile.TemporaryDirectory()
        self.addCleanup(other.cleanup)
        write_drive(other.name, "a", [(5.0, ["vehicle"]), (5.0, [])])
        write_drive(other.name, "z", [(5.0, [])])
        c = report.compare(report.summarise(self.root), report.summarise(other.name))
        rows = {r["id"]: r for r in c["drives"]}
        self.assertEqual(rows["a"]["a"]["detections"], 3)
        self.assertEqual(rows["a"]["b"]["detections"], 1)
        self.assertEqual(rows["a"]["detections_delta"], -2)
        self.assertIsNone(rows["z"]["a"])
        self.assertEqual(c["only_a"], ["b", "bad"])
        self.assertEqual(c["only_b"], ["z"])

    def test_the_page_is_self_contained_with_plots_and_failures(self):
        json_path = os.path.join(self.root, "r.json")
        html_path = os.path.join(self.root, "r.html")
        args = cli.parser().parse_args(["report", self.root, "--json", json_path, "--html", html_path])
        self.assertEqual(report.run(args), 0)
        page = open(html_path).read()
        self.assertEqual(page.count("<svg"), 3)
        self.assertIn("ffmpeg failed on video bad.mp4", page)
        for banned in ("<script", "src=", "<link", "@import"):
            self.assertNotIn(banned, page)
        self.assertEqual(json.load(open(json_path))["total"]["drives"], 3)
        # Names are escaped, not injected.
        write_drive(self.root, "x", [], status="failed", error="<b>bold</b>")
        report.run(args)
        self.assertIn("&lt;b&gt;bold&lt;/b&gt;", open(html_path).read())

    def test_a_missing_folder_is_an_error(self):
        args = cli.parser().parse_args(["report", os.path.join(self.root, "nope")])
        self.assertEqual(report.run(args), 2)


class RunOptions(unittest.TestCase):
    def test_threads_follow_the_task_cpus_unless_given(self):
        self.assertEqual(fleet.with_threads(["--conf", "0.3"], 1), ["--conf", "0.3", "--threads", "1"])
        self.assertEqual(fleet.with_threads(["--threads", "3"], 1), ["--threads", "3"])
        self.assertEqual(fleet.with_threads(["--threads=3"], 1), ["--threads=3"])

    def test_detector_options_pass_through_and_fleet_options_are_refused(self):
        args, rest = cli.parser().parse_known_args(
            ["run", "m.toml", "--out", "o", "--weights", "w.pth", "--conf", "0.4", "--cpus-per-drive", "1"]
        )
        self.assertEqual((args.manifest, args.out, args.cpus_per_drive), ("m.toml", "o", 1.0))
        self.assertEqual(rest, ["--weights", "w.pth", "--conf", "0.4"])
        with self.assertRaises(SystemExit):
            cli.main(["run", "m.toml", "--out", "o", "--shard", "0/2"])

    def test_drives_are_grouped_into_tasks_in_order(self):
        self.assertEqual(fleet.chunks(["a", "b", "c"], 2), [["a", "b"], ["c"]])
        self.assertEqual(fleet.chunks(["a", "b"], 1), [["a"], ["b"]])
        self.assertEqual(fleet.chunks([], 3), [])

    def test_listing_is_spread_over_the_nodes_up_to_a_bound(self):
        self.assertEqual(fleet.listing_shards(0), 1)
        self.assertEqual(fleet.listing_shards(2), 2)
        self.assertEqual(fleet.listing_shards(1000), 32)

    def test_a_fenced_command_gives_its_status_and_stderr(self):
        code, err = fleet.run_fenced(["sh", "-c", "sleep 0.3; echo oops >&2; exit 4"], poll_s=0.05)
        self.assertEqual((code, err), (4, "oops\n"))

    def test_a_missing_binary_is_named(self):
        with self.assertRaises(fleet.LookoutError) as e:
            fleet.find_lookout("/nonexistent/lookout")
        self.assertIn("--lookout", str(e.exception))


def closed_port():
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Driver(unittest.TestCase):
    def test_threads_are_capped_by_the_cores_this_process_may_use(self):
        cores = len(os.sched_getaffinity(0))
        self.assertEqual(fleet.usable_cores(), cores)
        self.assertEqual(fleet.with_threads([], 10_000), ["--threads", str(cores)])

    def test_path_options_are_made_absolute_in_the_driver(self):
        rest = ["--weights", "m/w.pth", "--tracker-config=t.toml", "--calib", "/abs/c.yaml", "--conf", "0.4", "--classes", "car"]
        self.assertEqual(
            fleet.absolute_paths(rest, cwd="/runs"),
            ["--weights", "/runs/m/w.pth", "--tracker-config=/runs/t.toml", "--calib", "/abs/c.yaml", "--conf", "0.4", "--classes", "car"],
        )
        self.assertEqual(fleet.absolute_lookout("bin/lookout", cwd="/runs"), "/runs/bin/lookout")
        self.assertEqual(fleet.absolute_lookout("./lookout", cwd="/runs"), "/runs/./lookout")
        # A bare name is looked up on each worker's PATH.
        self.assertEqual(fleet.absolute_lookout("lookout", cwd="/runs"), "lookout")

    def test_addresses_are_parsed_for_the_reachability_check(self):
        self.assertIsNone(fleet.parse_address("auto"))
        self.assertIsNone(fleet.parse_address("local"))
        self.assertEqual(fleet.parse_address("10.0.0.1:6379"), ("10.0.0.1", 6379))
        self.assertEqual(fleet.parse_address("ray://head:10002"), ("head", 10002))
        self.assertEqual(fleet.parse_address("ray://head"), ("head", 10001))
        self.assertEqual(fleet.parse_address("[::1]:6379"), ("::1", 6379))

    def test_an_address_with_nothing_listening_fails_at_once_in_one_line(self):
        port = closed_port()
        for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
            err = io.StringIO()
            start = time.monotonic()
            with contextlib.redirect_stderr(err):
                code = cli.main(["run", "m.toml", "--out", self.out, "--address", address])
            self.assertEqual(code, 1)
            self.assertLess(time.monotonic() - start, 10)
            lines = err.getvalue().strip().splitlines()
            self.assertEqual(len(lines), 1, err.getvalue())
            self.assertIn(f"cannot connect to the Ray cluster at `{address}`", lines[0])
            self.assertIn(f"127.0.0.1:{port}", lines[0])

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.out = os.path.join(self._tmp.name, "out")

    def tearDown(self):
        self._tmp.cleanup()


if __name__ == "__main__":
    unittest.main()
