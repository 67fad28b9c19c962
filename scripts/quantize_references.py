#!/usr/bin/env python3
"""int8 versions of an ONNX model for the reference runtimes, calibrated on the images lookout uses.

  quantize_references.py MODEL.onnx --images DIR --out DIR [--ort-tool ort_reference.py]
                         [--no-openvino]

Writes, into --out (and prints one JSON line naming them):
  <stem>.ort-int8.onnx  onnxruntime's post-training static quantization (quantize_static after
                        quant_pre_process): QDQ format, per-channel int8 weights, uint8 activations,
                        MinMax calibration -- the scheme `lookout --precision int8` uses.
  <stem>.ov-int8.xml    OpenVINO's: nncf.quantize on the model read by OpenVINO (its default preset:
                        symmetric int8 weights per channel and activations per tensor), saved as IR.
Both calibrate on every .jpg/.jpeg/.png in --images, preprocessed by ort_reference.py's own code
(the YOLOX or ultralytics letterbox of the family it recognises), as its bench feeds them.
A model is reused only when <stem>.<runtime>.int8-key holds the digest of what made it: the MODEL's
bytes, the images' names and bytes, this script, the preprocessing tool and the quantizer's package
versions; the key is removed before the model is rewritten and written (atomically) after it, so a
run that fails half-way leaves nothing that looks fresh. --no-openvino skips OpenVINO (and NNCF).
Needs onnxruntime, onnx, openvino, nncf, numpy, pillow: scripts/bench-tools --install.
"""
import argparse
import hashlib
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from openvino_bench import find_ort_tool, load_ort_reference  # noqa: E402

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def calibration_images(folder):
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        sys.exit(f"quantize_references: --images {folder}: no .jpg, .jpeg or .png files there")
    return [os.path.join(folder, n) for n in names]


def file_digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def digest(model, images, ort_tool, versions):
    """What a quantized model depends on: inputs, code and package versions."""
    h = hashlib.sha256()
    for part in [file_digest(model), file_digest(os.path.abspath(__file__)), file_digest(ort_tool)]:
        h.update(part.encode())
    for path in images:
        h.update(os.path.basename(path).encode())
        h.update(file_digest(path).encode())
    h.update(json.dumps(versions, sort_keys=True).encode())
    return h.hexdigest()


def read_key(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def write_key(path, key):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(key + "\n")
    os.replace(tmp, path)


def remove(*paths):
    for path in paths:
        if os.path.exists(path):
            os.remove(path)


def inputs(ref, view, images):
    """The preprocessed calibration tensors, [1, 3, H, W] f32 each, as ort_reference feeds them."""
    fam = ref.guess_family(view)
    backend = ref.ImageBackend("auto")
    hw = ref.input_hw(view)
    return [ref.FAMILIES[fam][0](backend.read_bgr(p), hw, backend)[0] for p in images]


def quantize_ort(model, out, name, tensors):
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quant_pre_process, quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter({name: t} for t in tensors)

        def get_next(self):
            return next(self.items, None)

    import onnx
    from onnx import version_converter

    prepared = out + ".pre.onnx"
    proto = onnx.load(model)
    # Per-channel QDQ needs DequantizeLinear's axis (opset 13); YOLOX's export is opset 11.
    if next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) < 13:
        proto = version_converter.convert_version(proto, 13)
    onnx.save(proto, prepared)
    quant_pre_process(prepared, prepared)
    quantize_static(prepared, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    os.remove(prepared)


def quantize_openvino(model, out, tensors):
    import nncf
    import openvino as ov

    ov_model = ov.Core().read_model(model)
    quantized = nncf.quantize(ov_model, nncf.Dataset(tensors), subset_size=len(tensors))
    # As NNCF left it: save_model would otherwise compress the float weights to f16.
    ov.save_model(quantized, out, compress_to_fp16=False)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="ONNX model file")
    ap.add_argument("--images", required=True, help="folder of calibration images")
    ap.add_argument("--out", required=True, help="folder the int8 models go to")
    ap.add_argument("--ort-tool", help="ort_reference.py whose preprocessing to use")
    ap.add_argument("--no-openvino", action="store_true", help="the onnxruntime model only")
    a = ap.parse_args(argv)
    import onnxruntime as ort

    images = calibration_images(a.images)
    ort_tool = find_ort_tool(a.ort_tool)
    os.makedirs(a.out, exist_ok=True)
    stem = os.path.splitext(os.path.basename(a.model))[0]
    ort_out = os.path.join(a.out, f"{stem}.ort-int8.onnx")
    ov_out = os.path.join(a.out, f"{stem}.ov-int8.xml")
    outputs = {"onnxruntime": (ort_out,)}
    if not a.no_openvino:
        outputs["openvino"] = (ov_out, ov_out[: -len(".xml")] + ".bin")
    tensors = None
    reused = {}
    for runtime, files in outputs.items():
        if runtime == "onnxruntime":
            import onnx
            versions = {"onnxruntime": ort.__version__, "onnx": onnx.__version__}
        else:
            import nncf
            import openvino as ov
            versions = {"openvino": ov.get_version(), "nncf": nncf.__version__}
        key_path = os.path.join(a.out, f"{stem}.{runtime}.int8-key")
        key = digest(a.model, images, ort_tool, versions)
        reused[runtime] = read_key(key_path) == key and all(os.path.isfile(f) for f in files)
        if reused[runtime]:
            continue
        remove(key_path, *files)
        if tensors is None:
            sess = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
            tensors = inputs(load_ort_reference(ort_tool), sess, images)
            name = sess.get_inputs()[0].name
        if runtime == "onnxruntime":
            quantize_ort(a.model, ort_out, name, tensors)
        else:
            quantize_openvino(a.model, ov_out, tensors)
        write_key(key_path, key)
    print(json.dumps({"model": a.model, "images": len(images), "onnxruntime_int8": ort_out,
                      "openvino_int8": None if a.no_openvino else ov_out, "reused": reused}))


if __name__ == "__main__":
    main()
