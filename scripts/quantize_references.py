#!/usr/bin/env python3
"""int8 versions of an ONNX model for the reference runtimes, calibrated on the images lookout uses.

  quantize_references.py MODEL.onnx --images DIR --out DIR [--ort-tool ort_reference.py]

Writes, into --out (and prints one JSON line naming them):
  <stem>.ort-int8.onnx  onnxruntime's post-training static quantization (quantize_static after
                        quant_pre_process): QDQ format, per-channel int8 weights, uint8 activations,
                        MinMax calibration -- the scheme `lookout --precision int8` uses.
  <stem>.ov-int8.xml    OpenVINO's: nncf.quantize on the model read by OpenVINO (its default preset:
                        symmetric int8 weights per channel and activations per tensor), saved as IR.
Both calibrate on every .jpg/.jpeg/.png in --images, preprocessed by ort_reference.py's own code
(the YOLOX or ultralytics letterbox of the family it recognises), as its bench feeds them.
A model already written for the same MODEL bytes and image list is reused (<stem>.int8-key holds
their digest). Needs onnxruntime, onnx, openvino, nncf, numpy, pillow: scripts/bench-tools --install.
"""
import argparse
import hashlib
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from openvino_bench import _SessionView, find_ort_tool, load_ort_reference  # noqa: E402

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def calibration_images(folder):
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        sys.exit(f"quantize_references: --images {folder}: no .jpg, .jpeg or .png files there")
    return [os.path.join(folder, n) for n in names]


def digest(model, images):
    h = hashlib.sha256()
    with open(model, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    for path in images:
        h.update(os.path.basename(path).encode())
        with open(path, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def inputs(ref, view, images):
    """The preprocessed calibration tensors, [1, 3, H, W] f32 each, as ort_reference feeds them."""
    fam = ref.guess_family(view)
    backend = ref.ImageBackend("auto")
    hw = ref.input_hw(view)
    return [ref.FAMILIES[fam][0](backend.read_bgr(p), hw, backend)[0] for p in images], fam


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
    ov.save_model(quantized, out, compress_to_fp16=False)  # the default f16 weights slow int8 down


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="ONNX model file")
    ap.add_argument("--images", required=True, help="folder of calibration images")
    ap.add_argument("--out", required=True, help="folder the int8 models go to")
    ap.add_argument("--ort-tool", help="ort_reference.py whose preprocessing to use")
    a = ap.parse_args(argv)
    import onnxruntime as ort

    images = calibration_images(a.images)
    os.makedirs(a.out, exist_ok=True)
    stem = os.path.splitext(os.path.basename(a.model))[0]
    ort_out = os.path.join(a.out, f"{stem}.ort-int8.onnx")
    ov_out = os.path.join(a.out, f"{stem}.ov-int8.xml")
    key_path = os.path.join(a.out, f"{stem}.int8-key")
    key = digest(a.model, images)
    fresh = (os.path.isfile(ort_out) and os.path.isfile(ov_out) and os.path.isfile(key_path)
             and open(key_path).read().strip() == key)
    if not fresh:
        ref = load_ort_reference(find_ort_tool(a.ort_tool))
        sess = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
        tensors, fam = inputs(ref, sess, images)
        name = sess.get_inputs()[0].name
        quantize_ort(a.model, ort_out, name, tensors)
        quantize_openvino(a.model, ov_out, tensors)
        with open(key_path, "w") as f:
            f.write(key + "\n")
    print(json.dumps({"model": a.model, "images": len(images), "onnxruntime_int8": ort_out,
                      "openvino_int8": ov_out, "reused": fresh}))


if __name__ == "__main__":
    main()
