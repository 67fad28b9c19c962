#!/usr/bin/env python3
"""OpenVINO (CPU) counterpart of `ort_reference.py bench`: time one ONNX model, print one JSON line.

  openvino_bench.py MODEL.onnx [--threads 2] [--warmup 10] [--runs 50] [--sessions 1]
                               [--image IMG --family auto|yolox|yolov8] [--resize auto|cv2|numpy|pil]
                               [--ort-tool ../shared/tools/ort_reference.py]

Same arguments, same input and same JSON keys as ort_reference.py's bench (median_ms, p90_ms, min_ms,
mean_ms, session_medians_ms, others_cpu_fraction, ...), plus p99_ms and the compiled model's settings.
The input is built by ort_reference.py's own code (imported, not copied): its seeded uniform random
tensor by default, or its YOLOX / ultralytics letterbox of --image, so both runtimes see identical
bytes. Settings: compile_model(model, "CPU", INFERENCE_NUM_THREADS=threads, PERFORMANCE_HINT=LATENCY,
INFERENCE_PRECISION_HINT=f32) -- f32 is explicit because OpenVINO's CPU plugin otherwise runs bf16 on
CPUs with AVX512-BF16 / AMX. Timed: one InferRequest.infer(feed) per run (binds the input, runs, copies
the outputs to numpy), the same work as onnxruntime's session.run(None, feed); no pre/post-processing.
Each --sessions block compiles the model afresh (a fresh thread pool), as ort_reference does.
Needs openvino, numpy, pillow and (because ort_reference.py imports it) onnxruntime: scripts/bench-tools.
"""
import argparse
import importlib.util
import json
import os
import sys
import time

import numpy as np
import openvino as ov

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def find_ort_tool(explicit=None):
    candidates = [explicit, os.environ.get("LOOKOUT_ORT_TOOL")]
    fixtures = os.environ.get("LOOKOUT_FIXTURES")
    if fixtures:
        candidates.append(os.path.join(os.path.dirname(os.path.abspath(fixtures)), "tools", "ort_reference.py"))
    candidates += [os.path.join(ROOT, "..", "shared", "tools", "ort_reference.py"),
                   "/work/shared/tools/ort_reference.py"]
    for c in candidates:
        if c and os.path.isfile(c):
            return c
    sys.exit("openvino_bench: cannot find ort_reference.py; pass --ort-tool or set LOOKOUT_ORT_TOOL")


def load_ort_reference(path):
    spec = importlib.util.spec_from_file_location("ort_reference", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _Port:
    """The bits of an onnxruntime NodeArg that ort_reference's helpers read (name, shape)."""

    def __init__(self, port):
        self.name = port.any_name
        self.shape = [d.get_length() if d.is_static else None for d in port.partial_shape]


class _SessionView:
    """Lets ort_reference.guess_family / input_hw inspect an OpenVINO model."""

    def __init__(self, model):
        self._inputs = [_Port(p) for p in model.inputs]
        self._outputs = [_Port(p) for p in model.outputs]

    def get_inputs(self):
        return self._inputs

    def get_outputs(self):
        return self._outputs


def compile_model(core, model, threads, precision="f32"):
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
    }
    if precision != "default":
        config["INFERENCE_PRECISION_HINT"] = precision
    return core.compile_model(model, "CPU", config)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="ONNX model file")
    ap.add_argument("--threads", type=int, default=2, help="INFERENCE_NUM_THREADS (default 2)")
    ap.add_argument("--family", choices=["auto", "yolox", "yolov8"], default="auto")
    ap.add_argument("--precision", choices=["f32", "bf16", "default"], default="f32",
                    help="INFERENCE_PRECISION_HINT; default = none (the plugin's choice: bf16 on CPUs with AMX/AVX512-BF16)")
    ap.add_argument("--resize", choices=["auto", "cv2", "numpy", "pil"], default="auto")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--runs", type=int, default=50, help="timed runs per compiled model")
    ap.add_argument("--sessions", type=int, default=1, help="repeat compile + warm-up + runs this many times")
    ap.add_argument("--image", help="time on this preprocessed image instead of random input")
    ap.add_argument("--ort-tool", help="ort_reference.py whose preprocessing to use")
    a = ap.parse_args(argv)
    if a.runs < 1:
        ap.error("--runs must be at least 1")
    ref = load_ort_reference(find_ort_tool(a.ort_tool))

    core = ov.Core()
    model = core.read_model(a.model)
    view = _SessionView(model)
    inp = view.get_inputs()[0]
    # Input exactly as ort_reference.cmd_bench builds it.
    if a.image:
        fam = ref.guess_family(view) if a.family == "auto" else a.family
        backend = ref.ImageBackend(a.resize)
        x, _ = ref.FAMILIES[fam][0](backend.read_bgr(a.image), ref.input_hw(view), backend)
        src = f"{os.path.basename(a.image)} preprocessed as {fam} ({backend.describe()['resize']})"
    else:
        fam = a.family
        if fam == "auto":
            try:
                fam = ref.guess_family(view)
            except ValueError:
                fam = "unknown"
        hi = 255.0 if fam == "yolox" else 1.0
        x = np.random.RandomState(0).uniform(0, hi, [d if isinstance(d, int) else 1 for d in inp.shape]).astype(np.float32)
        src = f"uniform random 0..{hi:g} (seed 0)"
    feed = {inp.name: x}

    blocks, compiled = [], None
    j0, c0 = ref._cpu_jiffies(), os.times()
    for _ in range(a.sessions):
        del compiled  # free the previous block's model and threads before compiling again
        compiled = compile_model(core, model, a.threads, a.precision)
        req = compiled.create_infer_request()
        for _ in range(a.warmup):
            req.infer(feed)
        ts = []
        for _ in range(a.runs):
            t = time.perf_counter()
            req.infer(feed)
            ts.append((time.perf_counter() - t) * 1e3)
        blocks.append(ts)
    j1, c1 = ref._cpu_jiffies(), os.times()
    ts = np.asarray(blocks).ravel()

    def prop(name):
        try:
            v = compiled.get_property(name)
            return v.to_string() if hasattr(v, "to_string") else str(v)  # ov.Type -> "f32"
        except Exception:  # noqa: BLE001 - property names differ between releases
            return None

    res = dict(model=os.path.basename(a.model), openvino=ov.get_version(), threads=a.threads,
               warmup=a.warmup, runs=a.runs, sessions=a.sessions, input=src, input_shape=list(x.shape),
               median_ms=round(float(np.median(ts)), 3), p90_ms=round(float(np.percentile(ts, 90)), 3),
               p99_ms=round(float(np.percentile(ts, 99)), 3),
               min_ms=round(float(ts.min()), 3), mean_ms=round(float(ts.mean()), 3),
               compiled={k: prop(k) for k in ("INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS",
                                                "NUM_STREAMS", "PERFORMANCE_HINT", "ENABLE_CPU_PINNING",
                                                "ENABLE_HYPER_THREADING")})
    if a.sessions > 1:
        res["session_medians_ms"] = [round(float(np.median(b)), 3) for b in blocks]
    if j0 and j1:  # share of machine CPU time used by OTHER processes while benchmarking (incl. warm-up)
        own = (c1.user + c1.system - c0.user - c0.system) * os.sysconf("SC_CLK_TCK")
        res["others_cpu_fraction"] = round(max(0.0, ((j1[0] - j0[0]) - own) / max(1, j1[1] - j0[1])), 3)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
