"""Drives per minute of `lookout batch` alone, and of `lookout-fleet run` on a Ray cluster of
1 and of 2 nodes (1 CPU each) on this machine, on the same manifest: N copies of the
Udacity clip (38 frames each), YOLOX-Nano, --threads 1. Run by scripts/fleet-bench.

The cluster is started on loopback (127.0.0.2) with `ray start --block` and stopped by the
pids this script started (no `ray stop`, which would stop every Ray on the machine).
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
IP = "127.0.0.2"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes():
    """pid -> (parent pid, start time in clock ticks since boot: field 22 of /proc/PID/stat)
    of every live process. A pid with another start time is another process (a reused pid)."""
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    stat = f.read()
                fields = stat[stat.rfind(")") + 2 :].split()
                if fields[0] != "Z":
                    found[int(name)] = (int(fields[1]), int(fields[19]))
            except (OSError, ValueError, IndexError):
                pass
    return found


def tree(root, root_start):
    """{pid: start time} of `root` (if it is still the process that started at `root_start`)
    and every process below it."""
    procs = processes()
    if procs.get(root, (0, None))[1] != root_start:
        return {}
    found = {root: root_start}
    queue = [root]
    for pid in queue:
        for p, (pp, start) in procs.items():
            if pp == pid and p not in found:
                found[p] = start
                queue.append(p)
    return found


def start_time(pid):
    return processes().get(pid, (0, None))[1]


def env():
    e = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", LOOKOUT_OFFLINE="1")
    e.pop("RAY_ADDRESS", None)
    return e


class Cluster:
    def __init__(self, nodes, temp, logs):
        # The processes started here with their start times, and every process seen below
        # them (pid -> start time): stop() kills only those still the same processes.
        self.procs, self.seen = [], {}
        self.address = f"{IP}:{free_port()}"
        for i in range(nodes):
            cmd = [
                os.path.join(BIN, "ray"), "start", "--block", "--num-cpus=1", "--disable-usage-stats",
                f"--node-ip-address={IP}", f"--dashboard-agent-listen-port={free_port()}",
                f"--min-worker-port={21000 + 100 * i}", f"--max-worker-port={21049 + 100 * i}",
            ]
            if i == 0:
                cmd += ["--head", "--include-dashboard=false", f"--dashboard-port={free_port()}"]
                cmd += [f"--port={self.address.split(':')[1]}", f"--temp-dir={temp}"]
            else:
                cmd += [f"--address={self.address}"]
            log_path = os.path.join(logs, f"ray-{nodes}-{i}.log")
            log = open(log_path, "w")
            proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env())
            self.procs.append((proc, start_time(proc.pid)))
            deadline = time.time() + 120
            while "Ray runtime started" not in open(log_path).read():
                if proc.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"ray start failed: {open(log_path).read()}")
                time.sleep(0.1)
            self.seen.update(tree(proc.pid, self.procs[-1][1]))

    def stop(self):
        for proc, start in self.procs:
            self.seen.update(tree(proc.pid, start))
        live = processes()
        for pid, start in self.seen.items():
            # Only a process seen below ours that is still that process (not a reused pid).
            if live.get(pid, (0, None))[1] == start:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for proc, _ in self.procs:
            proc.wait()


def timed(cmd):
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env())
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return took


SPIN = "import time\nt = time.perf_counter()\nx = 0\nfor i in range(20_000_000): x += i\nprint(time.perf_counter() - t)"


def parallel_ceiling():
    """What two CPU-bound processes at once give on this machine against one (2.0 on two
    free cores; less where the cores are shared or throttled)."""
    spin = [sys.executable, "-c", SPIN]
    one = float(subprocess.run(spin, stdout=subprocess.PIPE, text=True, check=True).stdout)
    start = time.perf_counter()
    procs = [subprocess.Popen(spin, stdout=subprocess.DEVNULL) for _ in range(2)]
    for proc in procs:
        proc.wait()
    return 2 * one / (time.perf_counter() - start)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--drives", type=int, default=12)
    p.add_argument("--repeat", type=int, default=2, help="runs of each; the fastest counts (default: 2)")
    p.add_argument("--lookout", default=os.path.join(REPO, "target/release/lookout"))
    fixtures = os.environ.get("LOOKOUT_FIXTURES", os.path.join(REPO, "../shared/fixtures"))
    p.add_argument("--weights", default=os.path.join(fixtures, "models/yolox_nano.pth"))
    p.add_argument("--clip", default=os.path.join(fixtures, "drives/udacity_test_video.mp4"))
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="fleet-bench-")
    temp = f"/tmp/lkfb-{os.getpid()}"
    try:
        manifest = os.path.join(work, "drives.toml")
        with open(manifest, "w") as f:
            for i in range(args.drives):
                f.write(f'[[drive]]\nid = "clip{i:03}"\nsource = "{args.clip}"\n\n')
        options = ["--weights", args.weights, "--threads", "1"]
        n = args.drives
        results = {
            "drives": n,
            "frames_per_drive": 38,
            "cores": os.cpu_count(),
            "load_before": os.getloadavg()[0],
            "cpu_two_vs_one_process": parallel_ceiling(),
        }

        def fastest(cmd, out):
            runs = []
            for _ in range(args.repeat):
                shutil.rmtree(out, ignore_errors=True)
                runs.append(timed(cmd))
            return min(runs)

        batch_out = os.path.join(work, "batch")
        batch = fastest([args.lookout, "batch", manifest, "--out", batch_out, *options], batch_out)
        results["batch_s"] = batch
        # The machine's own ceiling for two at once: two `lookout batch --shard k/2` side by
        # side, no Ray.
        runs = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            procs = [
                subprocess.Popen(
                    [args.lookout, "batch", manifest, "--out", os.path.join(work, f"shard{k}-{len(runs)}"), "--shard", f"{k}/2", *options],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(),
                )
                for k in range(2)
            ]
            if any(p.wait() != 0 for p in procs):
                raise SystemExit("lookout batch --shard failed")
            runs.append(time.perf_counter() - start)
        results["two_shards_no_ray_s"] = min(runs)
        for nodes in (1, 2):
            cluster = Cluster(nodes, temp, work)
            try:
                out = os.path.join(work, f"fleet{nodes}")
                summary = os.path.join(work, f"summary{nodes}.json")
                cmd = [
                    os.path.join(BIN, "lookout-fleet"), "run", manifest, "--out", out,
                    "--address", cluster.address, "--cpus-per-drive", "1", "--lookout", args.lookout,
                    "--summary", summary, *options,
                ]
                results[f"fleet_{nodes}_node_s"] = fastest(cmd, out)
                # Per drive: the task's time around its lookout process against lookout's own
                # time for the drive (model load and pipeline), from the last run.
                ran = json.load(open(summary))["results"]
                task_s = sum(r["seconds"] for r in ran) / len(ran)
                pipeline_s = sum(json.load(open(os.path.join(out, r["id"], "done.json")))["duration_s"] for r in ran) / len(ran)
                results[f"fleet_{nodes}_node_task_minus_pipeline_s"] = task_s - pipeline_s
                # A re-run with every drive done: the fixed cost of a run (connect, list).
                results[f"fleet_{nodes}_node_rerun_s"] = timed(cmd)
            finally:
                cluster.stop()
                shutil.rmtree(temp, ignore_errors=True)
        per_min = lambda s: 60 * n / s  # noqa: E731
        fixed = results["fleet_1_node_rerun_s"]
        summary = {
            **results,
            "batch_drives_per_min": per_min(batch),
            "fleet_1_node_drives_per_min": per_min(results["fleet_1_node_s"]),
            "fleet_2_node_drives_per_min": per_min(results["fleet_2_node_s"]),
            "speedup_2_vs_1_node": results["fleet_1_node_s"] / results["fleet_2_node_s"],
            "speedup_two_shards_no_ray": batch / results["two_shards_no_ray_s"],
            "ray_overhead_per_drive_s": (results["fleet_1_node_s"] - fixed - batch) / n,
            "ray_fixed_overhead_s": fixed,
            "batch_per_drive_s": batch / n,
            "load_after": os.getloadavg()[0],
        }
        print(json.dumps(summary, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
