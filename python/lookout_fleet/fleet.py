"""`lookout-fleet run`: one Ray task per drive, each running the lookout binary exactly as
`lookout batch` runs that drive (`lookout batch MANIFEST --out DIR --drive ID [options]`),
so a drive's files are the same whichever node made them and the result folder keeps
lookout's guarantees: a drive's folder appears whole or not at all, done drives are
skipped, failed ones are recorded with their error.

Which drives there are, and which are already done, comes from `lookout batch --list`
(also run as a Ray task, so the machine that drives the run needs no lookout binary): the
manifest is parsed by lookout alone. A task whose worker or node is lost is retried by Ray
(`max_retries`); a lookout process killed by a signal is retried too (`retry_exceptions`),
and a lookout process never outlives its worker (PR_SET_PDEATHSIG), so two attempts at a
drive never write at once from a lost node.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

# `lookout batch` exit statuses (src/cli/batch_cmd.rs).
EXIT_OK = 0
EXIT_DRIVES_FAILED = 4
EXIT_INTERRUPTED = 130


class LookoutCrashed(RuntimeError):
    """The lookout process died from a signal or was interrupted: worth another try."""


class LookoutError(RuntimeError):
    """lookout refused to run (bad manifest, unreadable weights, …): another try would fail too."""


def _die_with_parent():
    """In the child, before exec: SIGKILL when the Ray worker that started it dies."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def find_lookout(lookout):
    """The lookout binary on this machine: a path, or a name on PATH."""
    found = shutil.which(lookout) if os.sep not in lookout else lookout
    if not found or not os.access(found, os.X_OK):
        raise LookoutError(
            f"lookout binary `{lookout}` not found or not executable on {os.uname().nodename}; "
            "put it on the workers' PATH (the worker image) or pass --lookout PATH"
        )
    return found


def batch_command(lookout, manifest, out, passthrough):
    return [lookout, "batch", manifest, "--out", out, *passthrough]


def list_drives(lookout, manifest, out, passthrough):
    """`lookout batch --list`: every drive with its id, source and state."""
    cmd = batch_command(find_lookout(lookout), manifest, out, passthrough) + ["--list"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise LookoutError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def run_fenced(cmd, poll_s=0.1):
    """Runs `cmd` while this worker's node is alive. A Ray worker whose raylet (its parent)
    dies can live on and even finish its task; here it stops at once instead — lookout is
    killed, the worker exits — so that the drive's retry elsewhere is its only writer and a
    lost node's drives are redone, never half-kept. Returns the exit status and stderr."""
    parent = os.getppid()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_die_with_parent,
    )
    while True:
        try:
            # A retried communicate() keeps what it read before the timeout.
            _, err = proc.communicate(timeout=poll_s)
            return proc.returncode, err or ""
        except subprocess.TimeoutExpired:
            if os.getppid() != parent:
                proc.kill()
                proc.wait()
                os._exit(1)


def run_drives(lookout, manifest, out, drive_ids, passthrough, cpus_per_drive):
    """Runs drives through one `lookout batch --drive ID...`; returns each drive's done.json
    and where it ran. A retry of the task skips the drives its first try finished."""
    import ray

    start = time.time()
    # --threads from this task's CPUs and this node's cores (not the driver's).
    options = with_threads(passthrough, cpus_per_drive)
    cmd = batch_command(find_lookout(lookout), manifest, out, options)
    for drive_id in drive_ids:
        cmd += ["--drive", drive_id]
    returncode, stderr = run_fenced(cmd)
    tail = stderr.strip().splitlines()[-1:] or [""]
    what = f"drive {', '.join(drive_ids)}"
    if returncode < 0 or returncode == EXIT_INTERRUPTED:
        raise LookoutCrashed(f"{what}: lookout exited with {returncode}: {tail[0]}")
    if returncode not in (EXIT_OK, EXIT_DRIVES_FAILED):
        raise LookoutError(f"{what}: lookout exited with {returncode}: {tail[0]}")
    seconds = (time.time() - start) / len(drive_ids)
    results = []
    for drive_id in drive_ids:
        done_path = os.path.join(out, drive_id, "done.json")
        try:
            with open(done_path) as f:
                record = json.load(f)
        except (OSError, ValueError) as e:
            raise LookoutCrashed(f"drive {drive_id}: lookout exited {returncode} but {done_path} is unreadable: {e}")
        results.append(
            {
                "id": drive_id,
                "status": record.get("status"),
                "error": record.get("error"),
                "frames": record.get("frames", {}).get("processed", 0),
                "node": ray.get_runtime_context().get_node_id(),
                "host": os.uname().nodename,
                "pid": record.get("attempt", {}).get("pid"),
                "seconds": seconds,
            }
        )
    return results


def chunks(items, size):
    """`items` in groups of at most `size`, in order."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def usable_cores():
    """The cores this process may run on (its affinity: a container's or taskset's share,
    not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def with_threads(passthrough, cpus_per_drive):
    """The options with `--threads` set to the task's CPUs, unless the caller set it."""
    if any(a == "--threads" or a.startswith("--threads=") for a in passthrough):
        return list(passthrough)
    threads = max(1, min(int(cpus_per_drive), usable_cores()))
    return [*passthrough, "--threads", str(threads)]


# Options of `lookout batch` (and `lookout run`) whose value is a file: made absolute by the
# driver, as the manifest and --out are, so every worker reads the same file whatever its
# working directory.
PATH_OPTIONS = ("--weights", "--tracker-config", "--calib")


def absolute_paths(passthrough, cwd=None):
    """The options with every path-valued option's value made absolute (`--opt PATH` and
    `--opt=PATH`)."""
    cwd = cwd or os.getcwd()
    out = []
    args = list(passthrough)
    i = 0
    while i < len(args):
        a = args[i]
        name, eq, value = a.partition("=")
        if name in PATH_OPTIONS and eq:
            out.append(f"{name}={os.path.join(cwd, value) if value else value}")
        elif a in PATH_OPTIONS and i + 1 < len(args):
            out += [a, os.path.join(cwd, args[i + 1])]
            i += 1
        else:
            out.append(a)
        i += 1
    return out


def absolute_lookout(lookout, cwd=None):
    """--lookout: a path (it holds a slash) made absolute; a bare name is looked up on each
    worker's PATH."""
    if os.sep in lookout:
        return os.path.join(cwd or os.getcwd(), lookout)
    return lookout


def parse_address(address):
    """(host, port) of a `HOST:PORT` or `ray://HOST:PORT[/...]` address (the client server's
    default port 10001 when a ray:// address has none); None for `auto`, `local` and what
    Ray resolves itself."""
    if not address or address in ("auto", "local"):
        return None
    rest = address
    default_port = None
    if rest.startswith("ray://"):
        rest = rest[len("ray://") :]
        default_port = 10001
    elif "://" in rest:
        return None
    rest = rest.split("/", 1)[0]
    if rest.startswith("["):  # [IPv6]:PORT
        host, _, port = rest[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if not host:
        return None
    if not port:
        if default_port is None:
            return None
        return host, default_port
    try:
        return host, int(port)
    except ValueError:
        return None


def check_reachable(address, timeout_s=5.0):
    """None when `address` takes a TCP connection (or is one Ray resolves itself), else the
    one-line reason: ray.init would otherwise wait a long while on a cluster not there."""
    target = parse_address(address)
    if target is None:
        return None
    try:
        socket.create_connection(target, timeout=timeout_s).close()
    except OSError as e:
        return f"nothing answers at {target[0]}:{target[1]} ({e.strerror or e})"
    return None


class Progress:
    """One line of drives done / failed / running / waiting, redrawn on a terminal and
    printed when it changes otherwise."""

    def __init__(self, total, skipped, stream=sys.stderr):
        self.total, self.skipped, self.stream = total, skipped, stream
        self.tty = stream.isatty()
        self.last = None

    def show(self, ok, failed, running, waiting, final=False):
        line = (
            f"fleet: {ok} ok, {failed} failed, {running} running, {waiting} waiting "
            f"of {self.total} drives ({self.skipped} done before)"
        )
        if line == self.last and not (final and self.tty):
            return
        self.last = line
        if self.tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def slots_now(ray, cpus_per_drive):
    """How many drives fit on the nodes alive now (a lost node's drives wait)."""
    return int(ray.cluster_resources().get("CPU", 0) // cpus_per_drive)


def listing_shards(alive_nodes):
    """How many `lookout batch --list --shard K/N` tasks read the result folder: one per
    node, at most 32 (each reads the whole manifest but only its share of done.json files)."""
    return max(1, min(32, alive_nodes))


def write_summary(path, drives, results, lost, interrupted=False):
    summary = {"drives": len(drives), "skipped": len(drives) - len(results) - len(lost), "results": results, "lost": lost}
    if interrupted:
        summary["interrupted"] = True
    with open(path, "w") as f:
        json.dump(summary, f, indent=1)


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def run(args, passthrough):
    """`lookout-fleet run`; returns the exit status."""
    import ray

    # SIGTERM (a scheduler's or Kubernetes' stop) ends the run as Ctrl-C does: the summary
    # written, ray.shutdown(), exit 130.
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)

    manifest = os.path.abspath(args.manifest)
    out = os.path.abspath(args.out)
    lookout = absolute_lookout(args.lookout)
    passthrough = absolute_paths(passthrough)
    unreachable = check_reachable(args.address)
    if unreachable:
        print(f"lookout-fleet: cannot connect to the Ray cluster at `{args.address}`: {unreachable}", file=sys.stderr)
        return 1
    try:
        ray.init(address=args.address, logging_level="WARNING", log_to_driver=args.verbose)
    except (ConnectionError, RuntimeError, ValueError) as e:
        print(f"lookout-fleet: cannot connect to the Ray cluster at `{args.address}`: {e}", file=sys.stderr)
        return 1
    try:
        options = list(passthrough)
        lister = ray.remote(num_cpus=0, max_retries=args.max_retries)(list_drives)
        shards = listing_shards(sum(1 for n in ray.nodes() if n.get("Alive")))
        try:
            parts = ray.get(
                [lister.remote(lookout, manifest, out, [*options, "--shard", f"{k}/{shards}"]) for k in range(shards)]
            )
        except ray.exceptions.RayError as e:
            print(f"lookout-fleet: cannot list the drives: {getattr(e, 'cause', None) or e}", file=sys.stderr)
            return 1
        # Shard k holds drives k, k + N, …: interleaved back into the manifest's order.
        drives = [part[i] for i in range(max(map(len, parts))) for part in parts if i < len(part)]
        todo_drives = [d["id"] for d in drives if d["state"] != "done"]
        progress = Progress(len(drives), len(drives) - len(todo_drives))
        # One task per --drives-per-task drives (default one), popped from the end.
        todo = chunks(todo_drives, args.drives_per_task)
        todo.reverse()
        task = ray.remote(
            num_cpus=args.cpus_per_drive,
            max_retries=args.max_retries,
            retry_exceptions=[LookoutCrashed],
        )(run_drives)
        pending = {}
        done = failed = 0
        lost = []
        results = []
        try:
            while todo or pending:
                # A bounded window of submitted tasks (twice what fits, at least 16): a million
                # drives are never a million task specs in the driver and the cluster at once,
                # and nodes added by an autoscaler widen it.
                slots = slots_now(ray, args.cpus_per_drive)
                while todo and len(pending) < max(16, 2 * slots):
                    group = todo.pop()
                    pending[task.remote(lookout, manifest, out, group, options, args.cpus_per_drive)] = group
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    group = pending.pop(ref)
                    try:
                        finished = ray.get(ref)
                    except Exception as e:  # a task that failed after its retries
                        cause = getattr(e, "cause", None) or e
                        error = (str(cause).strip().splitlines() or [type(cause).__name__])[-1]
                        lost.extend({"id": drive_id, "error": error} for drive_id in group)
                        continue
                    results.extend(finished)
                    ok = sum(r["status"] == "ok" for r in finished)
                    done += ok
                    failed += len(finished) - ok
                # Drives, not tasks: a task of a group runs its drives one after another.
                queued = sum(map(len, pending.values())) + sum(map(len, todo))
                running = min(len(pending), slots)
                progress.show(done, failed + len(lost), running, queued - running)
        except KeyboardInterrupt:
            # Ctrl-C or SIGTERM: what finished is whole and kept; the summary says so.
            if args.summary:
                write_summary(args.summary, drives, results, lost, interrupted=True)
            raise
        progress.show(done, failed + len(lost), 0, 0, final=True)
        for r in results:
            if r["status"] != "ok":
                print(f"drive {r['id']}: FAILED: {r['error']}", file=sys.stderr)
        for r in lost:
            print(f"drive {r['id']}: NOT RUN (task failed after {args.max_retries} retries): {r['error']}", file=sys.stderr)
        if args.summary:
            write_summary(args.summary, drives, results, lost)
        if lost:
            return 1
        return EXIT_DRIVES_FAILED if failed else 0
    finally:
        ray.shutdown()
