#!/usr/bin/env python3
"""Independent MCAP reference tool for lookout's tests.

Reads and writes MCAP files with the official Python libraries (``mcap``,
``mcap-protobuf-support``, ``mcap-ros2-support``, ``foxglove-schemas-protobuf``)
so that the Rust MCAP writer/reader is checked against code it shares nothing with.
Run it through ``scripts/mcap-tools`` (which creates ``.venv-mcap/``); the Rust
tests call ``.venv-mcap/bin/python scripts/mcap_tool.py``.

Subcommands (every result is one JSON document on stdout; errors go to stderr, exit 1):

  summary FILE [--images-dir DIR]
      Seeking read (summary + chunk indexes) that decodes every message: protobuf
      from the schema in the file, ROS 2 CDR from the msgdef, JSON with json.loads.
  recover FILE
      Record-by-record stream read that ignores the summary/index (for files of a
      killed recorder); stops at the first error (truncation, bad CRC).
  write-ros2 OUT --encoding ENC [--topic T] [--camera-info] [--expected-dir DIR] IMAGE...
      ROS 2 sensor_msgs/msg/Image or CompressedImage (+ CameraInfo) via mcap_ros2's writer.
  write-foxglove OUT --kind compressed|raw --encoding protobuf|json [--topic T] IMAGE...
      foxglove.CompressedImage / foxglove.RawImage, protobuf or JSON.
  truncate IN OUT --fraction F
      Copy the first F of IN's bytes to OUT.

Byte payloads never appear in the JSON output: images are reported by size and
decoded dimensions, and a JSON message's top-level base64 "data" string is
replaced by {"base64_bytes": N} (N = decoded length).
"""

import argparse
import base64
import io
import json
import os
import re
import sys
from collections import Counter

import numpy as np
from PIL import Image

import mcap
import mcap_protobuf.decoder
import mcap_ros2.decoder
from mcap.decoder import DecoderFactory
from mcap.exceptions import EndOfFile
from mcap.reader import make_reader
from mcap.records import Channel, Footer, Message
from mcap.stream_reader import StreamReader
from mcap.writer import CompressionType
from mcap.writer import Writer as McapWriter

BASE_TIME_NS = 1_700_000_000_000_000_000
FRAME_PERIOD_NS = 100_000_000
FRAME_ID = "cam"
MCAP_MAGIC = b"\x89MCAP0\r\n"
COMPRESSIONS = {"zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4, "none": CompressionType.NONE}


class ToolError(Exception):
    """An error reported to the user as one line on stderr (exit 1)."""


def stamp_ns(index):
    return BASE_TIME_NS + index * FRAME_PERIOD_NS


def emit(doc):
    json.dump(doc, sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")


# ---------------------------------------------------------------------------------------------
# ROS 2 message definitions, verbatim .msg files from ros2/common_interfaces and
# ros2/rcl_interfaces (Apache-2.0), combined below the way rosbag2 does it.
# ---------------------------------------------------------------------------------------------

# sensor_msgs/msg/Image.msg (ROS 2 Jazzy; identical on Rolling)
IMAGE_MSG = '''\
# This message contains an uncompressed image
# (0, 0) is at top-left corner of image

std_msgs/Header header # Header timestamp should be acquisition time of image
                             # Header frame_id should be optical frame of camera
                             # origin of frame should be optical center of cameara
                             # +x should point to the right in the image
                             # +y should point down in the image
                             # +z should point into to plane of the image
                             # If the frame_id here and the frame_id of the CameraInfo
                             # message associated with the image conflict
                             # the behavior is undefined

uint32 height                # image height, that is, number of rows
uint32 width                 # image width, that is, number of columns

# The legal values for encoding are in file include/sensor_msgs/image_encodings.hpp
# If you want to standardize a new string format, join
# ros-users@lists.ros.org and send an email proposing a new encoding.

string encoding       # Encoding of pixels -- channel meaning, ordering, size
                      # taken from the list of strings in include/sensor_msgs/image_encodings.hpp

uint8 is_bigendian    # is this data bigendian?
uint32 step           # Full row length in bytes
uint8[] data          # actual matrix data, size is (step * rows)
'''

# sensor_msgs/msg/CompressedImage.msg (ROS 2 Jazzy; identical on Rolling)
COMPRESSED_IMAGE_MSG = '''\
# This message contains a compressed image.

std_msgs/Header header # Header timestamp should be acquisition time of image
                             # Header frame_id should be optical frame of camera
                             # origin of frame should be optical center of cameara
                             # +x should point to the right in the image
                             # +y should point down in the image
                             # +z should point into to plane of the image

string format                # Specifies the format of the data
                             # Acceptable values differ by the image transport used:
                             # - compressed_image_transport:
                             #     ORIG_PIXFMT; CODEC compressed [COMPRESSED_PIXFMT]
                             #   where:
                             #   - ORIG_PIXFMT is pixel format of the raw image, i.e.
                             #     the content of sensor_msgs/Image/encoding with
                             #     values from include/sensor_msgs/image_encodings.h
                             #   - CODEC is one of [jpeg, png, tiff]
                             #   - COMPRESSED_PIXFMT is only appended for color images
                             #     and is the pixel format used by the compression
                             #     algorithm. Valid values for jpeg encoding are:
                             #     [bgr8, rgb8]. Valid values for png encoding are:
                             #     [bgr8, rgb8, bgr16, rgb16].
                             #   If the field is empty or does not correspond to the
                             #   above pattern, the image is treated as bgr8 or mono8
                             #   jpeg image (depending on the number of channels).
                             # - compressed_depth_image_transport:
                             #     ORIG_PIXFMT; compressedDepth CODEC
                             #   where:
                             #   - ORIG_PIXFMT is pixel format of the raw image, i.e.
                             #     the content of sensor_msgs/Image/encoding with
                             #     values from include/sensor_msgs/image_encodings.h
                             #     It is usually one of [16UC1, 32FC1].
                             #   - CODEC is one of [png, rvl]
                             #   If the field is empty or does not correspond to the
                             #   above pattern, the image is treated as png image.
                             # - Other image transports can store whatever values they
                             #   need for successful decoding of the image. Refer to
                             #   documentation of the other transports for details.

uint8[] data                 # Compressed image buffer
'''

# sensor_msgs/msg/CameraInfo.msg (ROS 2 Jazzy; identical on Rolling)
CAMERA_INFO_MSG = '''\
# This message defines meta information for a camera. It should be in a
# camera namespace on topic "camera_info" and accompanied by up to five
# image topics named:
#
#   image_raw - raw data from the camera driver, possibly Bayer encoded
#   image            - monochrome, distorted
#   image_color      - color, distorted
#   image_rect       - monochrome, rectified
#   image_rect_color - color, rectified
#
# The image_pipeline contains packages (image_proc, stereo_image_proc)
# for producing the four processed image topics from image_raw and
# camera_info. The meaning of the camera parameters are described in
# detail at http://www.ros.org/wiki/image_pipeline/CameraInfo.
#
# The image_geometry package provides a user-friendly interface to
# common operations using this meta information. If you want to, e.g.,
# project a 3d point into image coordinates, we strongly recommend
# using image_geometry.
#
# If the camera is uncalibrated, the matrices D, K, R, P should be left
# zeroed out. In particular, clients may assume that K[0] == 0.0
# indicates an uncalibrated camera.

#######################################################################
#                     Image acquisition info                          #
#######################################################################

# Time of image acquisition, camera coordinate frame ID
std_msgs/Header header # Header timestamp should be acquisition time of image
                             # Header frame_id should be optical frame of camera
                             # origin of frame should be optical center of camera
                             # +x should point to the right in the image
                             # +y should point down in the image
                             # +z should point into the plane of the image


#######################################################################
#                      Calibration Parameters                         #
#######################################################################
# These are fixed during camera calibration. Their values will be the #
# same in all messages until the camera is recalibrated. Note that    #
# self-calibrating systems may "recalibrate" frequently.              #
#                                                                     #
# The internal parameters can be used to warp a raw (distorted) image #
# to:                                                                 #
#   1. An undistorted image (requires D and K)                        #
#   2. A rectified image (requires D, K, R)                           #
# The projection matrix P projects 3D points into the rectified image.#
#######################################################################

# The image dimensions with which the camera was calibrated.
# Normally this will be the full camera resolution in pixels.
uint32 height
uint32 width

# The distortion model used. Supported models are listed in
# sensor_msgs/distortion_models.hpp. For most cameras, "plumb_bob" - a
# simple model of radial and tangential distortion - is sufficent.
string distortion_model

# The distortion parameters, size depending on the distortion model.
# For "plumb_bob", the 5 parameters are: (k1, k2, t1, t2, k3).
float64[] d

# Intrinsic camera matrix for the raw (distorted) images.
#     [fx  0 cx]
# K = [ 0 fy cy]
#     [ 0  0  1]
# Projects 3D points in the camera coordinate frame to 2D pixel
# coordinates using the focal lengths (fx, fy) and principal point
# (cx, cy).
float64[9]  k # 3x3 row-major matrix

# Rectification matrix (stereo cameras only)
# A rotation matrix aligning the camera coordinate system to the ideal
# stereo image plane so that epipolar lines in both stereo images are
# parallel.
float64[9]  r # 3x3 row-major matrix

# Projection/camera matrix
#     [fx'  0  cx' Tx]
# P = [ 0  fy' cy' Ty]
#     [ 0   0   1   0]
# By convention, this matrix specifies the intrinsic (camera) matrix
#  of the processed (rectified) image. That is, the left 3x3 portion
#  is the normal camera intrinsic matrix for the rectified image.
# It projects 3D points in the camera coordinate frame to 2D pixel
#  coordinates using the focal lengths (fx', fy') and principal point
#  (cx', cy') - these may differ from the values in K.
# For monocular cameras, Tx = Ty = 0. Normally, monocular cameras will
#  also have R = the identity and P[1:3,1:3] = K.
# For a stereo pair, the fourth column [Tx Ty 0]' is related to the
#  position of the optical center of the second camera in the first
#  camera's frame. We assume Tz = 0 so both cameras are in the same
#  stereo image plane. The first camera always has Tx = Ty = 0. For
#  the right (second) camera of a horizontal stereo pair, Ty = 0 and
#  Tx = -fx' * B, where B is the baseline between the cameras.
# Given a 3D point [X Y Z]', the projection (x, y) of the point onto
#  the rectified image is given by:
#  [u v w]' = P * [X Y Z 1]'
#         x = u / w
#         y = v / w
#  This holds for both images of a stereo pair.
float64[12] p # 3x4 row-major matrix


#######################################################################
#                      Operational Parameters                         #
#######################################################################
# These define the image region actually captured by the camera       #
# driver. Although they affect the geometry of the output image, they #
# may be changed freely without recalibrating the camera.             #
#######################################################################

# Binning refers here to any camera setting which combines rectangular
#  neighborhoods of pixels into larger "super-pixels." It reduces the
#  resolution of the output image to
#  (width / binning_x) x (height / binning_y).
# The default values binning_x = binning_y = 0 is considered the same
#  as binning_x = binning_y = 1 (no subsampling).
uint32 binning_x
uint32 binning_y

# Region of interest (subwindow of full camera resolution), given in
#  full resolution (unbinned) image coordinates. A particular ROI
#  always denotes the same window of pixels on the camera sensor,
#  regardless of binning settings.
# The default setting of roi (all values 0) is considered the same as
#  full resolution (roi.width = width, roi.height = height).
RegionOfInterest roi
'''

# sensor_msgs/msg/RegionOfInterest.msg (ROS 2 Jazzy; identical on Rolling)
REGION_OF_INTEREST_MSG = '''\
# This message is used to specify a region of interest within an image.
#
# When used to specify the ROI setting of the camera when the image was
# taken, the height and width fields should either match the height and
# width fields for the associated image; or height = width = 0
# indicates that the full resolution image was captured.

uint32 x_offset  # Leftmost pixel of the ROI
                 # (0 if the ROI includes the left edge of the image)
uint32 y_offset  # Topmost pixel of the ROI
                 # (0 if the ROI includes the top edge of the image)
uint32 height    # Height of ROI
uint32 width     # Width of ROI

# True if a distinct rectified ROI should be calculated from the "raw"
# ROI in this message. Typically this should be False if the full image
# is captured (ROI not used), and True if a subwindow is captured (ROI
# used).
bool do_rectify
'''

# std_msgs/msg/Header.msg (ROS 2 Jazzy; identical on Rolling)
HEADER_MSG = '''\
# Standard metadata for higher-level stamped data types.
# This is generally used to communicate timestamped data
# in a particular coordinate frame.

# Two-integer timestamp that is expressed as seconds and nanoseconds.
builtin_interfaces/Time stamp

# Transform frame with which this data is associated.
string frame_id
'''

# builtin_interfaces/msg/Time.msg (ROS 2 Jazzy; identical on Rolling)
TIME_MSG = '''\
# This message communicates ROS Time defined here:
# https://design.ros2.org/articles/clock_and_time.html

# The seconds component, valid over all int32 values.
int32 sec

# The nanoseconds component, valid in the range [0, 1e9).
uint32 nanosec
'''

MSG_FILES = {
    "sensor_msgs/Image": IMAGE_MSG,
    "sensor_msgs/CompressedImage": COMPRESSED_IMAGE_MSG,
    "sensor_msgs/CameraInfo": CAMERA_INFO_MSG,
    "sensor_msgs/RegionOfInterest": REGION_OF_INTEREST_MSG,
    "std_msgs/Header": HEADER_MSG,
    "builtin_interfaces/Time": TIME_MSG,
}
PRIMITIVE_TYPES = {
    "bool", "byte", "char", "float32", "float64", "int8", "uint8",
    "int16", "uint16", "int32", "uint32", "int64", "uint64", "string",
}
# rosbag2's MSG_FIELD_TYPE_REGEX (local_message_definition_source.cpp)
MSG_FIELD_TYPE_RE = re.compile(r"(?:^|\n)\s*([a-zA-Z0-9_/]+)(?:\[[^\]]*\])?\s+")
DELIMITER = "=" * 80 + "\n"


def _msg_key(type_name):
    """'sensor_msgs/msg/Image' or 'sensor_msgs/Image' -> 'sensor_msgs/Image'."""
    parts = type_name.split("/")
    return f"{parts[0]}/{parts[-1]}"


def _msg_dependencies(text, package):
    deps = set()
    for match in MSG_FIELD_TYPE_RE.finditer(text):
        name = match.group(1)
        if name in PRIMITIVE_TYPES:
            continue
        deps.add(name if "/" in name else f"{package}/{name}")
    return sorted(deps)


def ros2_msgdef(root_type):
    """Complete 'ros2msg' definition of root_type, as rosbag2's LocalMessageDefinitionSource
    builds it: the root .msg text, then each not-yet-seen dependency (sorted, depth first) as
    '\\n' + 80 '=' + '\\nMSG: pkg/Type\\n' + its .msg text."""
    seen = set()

    def append(type_name):
        text = MSG_FILES[_msg_key(type_name)]
        result = text
        for dep in _msg_dependencies(text, type_name.split("/")[0]):
            if dep not in seen:
                seen.add(dep)
                result += "\n" + DELIMITER + "MSG: " + dep + "\n" + append(dep)
        return result

    return append(root_type)


# ---------------------------------------------------------------------------------------------
# Image helpers
# ---------------------------------------------------------------------------------------------

def load_rgb(path):
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def _round_u8(x):
    """Round half up and clip to 0..255."""
    return np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)


# BT.601 limited range on R' = R/255 (ITU-R BT.601 / sensor_msgs yuv422 convention)
YUV_FROM_RGB = np.array([
    [65.481, 128.553, 24.966],
    [-37.797, -74.203, 112.0],
    [112.0, -93.786, -18.214],
])
YUV_OFFSET = np.array([16.0, 128.0, 128.0])


def rgb_to_yuv422(rgb, order):
    """Pack RGB into 4:2:2 with chroma averaged over each horizontal pixel pair.
    order 'uyvy' -> U0 Y0 V0 Y1 (ROS 'yuv422'); 'yuyv' -> Y0 U0 Y1 V0 ('yuv422_yuy2')."""
    h, w, _ = rgb.shape
    if w % 2:
        raise ToolError(f"yuv 4:2:2 needs an even width, image is {w} wide")
    yuv = (rgb.astype(np.float64) / 255.0) @ YUV_FROM_RGB.T + YUV_OFFSET
    y = _round_u8(yuv[:, :, 0])
    u = _round_u8((yuv[:, 0::2, 1] + yuv[:, 1::2, 1]) / 2.0)
    v = _round_u8((yuv[:, 0::2, 2] + yuv[:, 1::2, 2]) / 2.0)
    out = np.empty((h, w // 2, 4), dtype=np.uint8)
    if order == "uyvy":
        out[:, :, 0], out[:, :, 1], out[:, :, 2], out[:, :, 3] = u, y[:, 0::2], v, y[:, 1::2]
    else:
        out[:, :, 0], out[:, :, 1], out[:, :, 2], out[:, :, 3] = y[:, 0::2], u, y[:, 1::2], v
    return out.reshape(h, w * 2), (y, u, v)


def yuv422_expected_rgb(y, u, v):
    """Exact inverse of YUV_FROM_RGB applied to the quantised Y and pair-shared U/V."""
    h, w = y.shape
    yuv = np.stack([y.astype(np.float64), np.repeat(u, 2, axis=1).astype(np.float64),
                    np.repeat(v, 2, axis=1).astype(np.float64)], axis=-1)
    rgb = (yuv - YUV_OFFSET) @ np.linalg.inv(YUV_FROM_RGB).T * 255.0
    return _round_u8(rgb).reshape(h, w, 3)


def rgb_to_bayer_rggb(rgb):
    h, w, _ = rgb.shape
    ys, xs = np.mgrid[0:h, 0:w]
    channel = np.where((xs % 2 == 0) & (ys % 2 == 0), 0, np.where((xs % 2 == 1) & (ys % 2 == 1), 2, 1))
    return np.take_along_axis(rgb, channel[:, :, None], axis=2)[:, :, 0]


def pad_rows(pixels, row_bytes, pad=8):
    """pixels: (h, row_bytes) uint8 -> bytes with `pad` zero bytes after every row."""
    h = pixels.shape[0]
    padded = np.zeros((h, row_bytes + pad), dtype=np.uint8)
    padded[:, :row_bytes] = pixels.reshape(h, row_bytes)
    return padded.tobytes()


def encode_image(rgb, fmt, **kwargs):
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format=fmt, **kwargs)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------------------------

class JsonDecoderFactory(DecoderFactory):
    """Decodes message_encoding 'json' with json.loads."""

    def decoder_for(self, message_encoding, schema):
        if message_encoding == "json":
            return lambda data: json.loads(data)
        return None


def _get(msg, name, default=None):
    """Field of a protobuf message or of a JSON object."""
    if isinstance(msg, dict):
        return msg.get(name, default)
    return getattr(msg, name, default)


def _stamp_ns(msg):
    ts = _get(msg, "timestamp")
    if ts is None:
        return None
    if isinstance(ts, dict):
        return int(ts.get("sec", 0)) * 1_000_000_000 + int(ts.get("nsec", 0))
    return int(ts.seconds) * 1_000_000_000 + int(ts.nanos)


def _bytes_field(msg, name="data"):
    data = _get(msg, name, b"")
    if isinstance(data, str):
        return base64.b64decode(data)
    return bytes(data)


def _json_for_output(obj):
    if isinstance(obj, dict) and isinstance(obj.get("data"), str):
        obj = dict(obj)
        obj["data"] = {"base64_bytes": len(base64.b64decode(obj["data"]))}
    return obj


def _check_finished(path):
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if head != MCAP_MAGIC:
            raise ToolError(f"{path}: not an MCAP file (bad leading magic)")
        f.seek(max(0, size - 8))
        tail = f.read(8)
    if size < 16 or tail != MCAP_MAGIC:
        raise ToolError(f"{path}: no MCAP footer/magic at end of file: truncated or not "
                        f"finished ({size} bytes); use `recover` to read it record by record")


def cmd_summary(args):
    _check_finished(args.file)
    if args.images_dir:
        os.makedirs(args.images_dir, exist_ok=True)
    out = {
        "profile": None, "library": None, "compression": [], "has_summary": False,
        "metadata": {}, "message_count": 0, "topics": {}, "images": [], "raw_images": [],
        "annotations": [], "json_messages": {}, "calibration": [],
    }
    with open(args.file, "rb") as f:
        reader = make_reader(f, validate_crcs=True, decoder_factories=[
            mcap_protobuf.decoder.DecoderFactory(), mcap_ros2.decoder.DecoderFactory(),
            JsonDecoderFactory()])
        header = reader.get_header()
        out["profile"], out["library"] = header.profile, header.library
        summary = reader.get_summary()
        out["has_summary"] = summary is not None
        if summary is not None:
            out["compression"] = sorted({ci.compression for ci in summary.chunk_indexes})
        for md in reader.iter_metadata():
            out["metadata"][md.name] = dict(md.metadata)
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            out["message_count"] += 1
            topic = out["topics"].setdefault(channel.topic, {
                "schema": schema.name if schema else "",
                "schema_encoding": schema.encoding if schema else "",
                "message_encoding": channel.message_encoding, "count": 0})
            topic["count"] += 1
            if channel.message_encoding == "json":
                out["json_messages"].setdefault(channel.topic, []).append(_json_for_output(decoded))
            name = schema.name if schema else ""
            if name == "foxglove.CompressedImage":
                out["images"].append(_summarize_compressed(decoded, message, len(out["images"]),
                                                           args.images_dir))
            elif name == "foxglove.RawImage":
                out["raw_images"].append({
                    "log_time": message.log_time, "publish_time": message.publish_time,
                    "stamp_ns": _stamp_ns(decoded), "frame_id": _get(decoded, "frame_id"),
                    "width": _get(decoded, "width"), "height": _get(decoded, "height"),
                    "encoding": _get(decoded, "encoding"), "step": _get(decoded, "step"),
                    "bytes": len(_bytes_field(decoded))})
            elif name == "foxglove.ImageAnnotations":
                points = list(_get(decoded, "points", []) or [])
                out["annotations"].append({
                    "log_time": message.log_time, "boxes": len(points),
                    "texts": [_get(t, "text") for t in (_get(decoded, "texts", []) or [])],
                    "points_per_box": [len(_get(p, "points", []) or []) for p in points],
                    "types": [_get(p, "type") for p in points],
                    "circles": len(_get(decoded, "circles", []) or [])})
            elif name == "foxglove.CameraCalibration":
                out["calibration"].append({
                    "log_time": message.log_time, "stamp_ns": _stamp_ns(decoded),
                    "width": _get(decoded, "width"), "height": _get(decoded, "height"),
                    "K": [float(x) for x in _get(decoded, "K", [])],
                    "D": [float(x) for x in _get(decoded, "D", [])],
                    "R": [float(x) for x in _get(decoded, "R", [])],
                    "P": [float(x) for x in _get(decoded, "P", [])],
                    "distortion_model": _get(decoded, "distortion_model"),
                    "frame_id": _get(decoded, "frame_id")})
    emit(out)


def _summarize_compressed(decoded, message, index, images_dir):
    data = _bytes_field(decoded)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            entry_size, pil_format = img.size, img.format
            if images_dir:
                img.convert("RGB").save(os.path.join(images_dir, f"{index:06}.png"))
    except Exception as e:
        raise ToolError(f"CompressedImage at log_time {message.log_time}: cannot decode "
                        f"{len(data)} bytes with Pillow: {e}") from e
    return {
        "log_time": message.log_time, "publish_time": message.publish_time,
        "stamp_ns": _stamp_ns(decoded), "frame_id": _get(decoded, "frame_id"),
        "format": _get(decoded, "format"), "bytes": len(data),
        "width": entry_size[0], "height": entry_size[1], "pil_format": pil_format,
    }


# ---------------------------------------------------------------------------------------------
# recover
# ---------------------------------------------------------------------------------------------

class StrictFile:
    """File wrapper that turns a short read into an error (the library's stream accepts
    short reads and would hand out a cut record)."""

    def __init__(self, f):
        self._f = f

    def read(self, n=-1):
        pos = self._f.tell()
        data = self._f.read(n)
        if n is not None and n >= 0 and len(data) < n:
            raise EndOfFile(f"unexpected end of file at byte {pos + len(data)} "
                            f"(wanted {n} bytes at offset {pos}, got {len(data)})")
        return data


def cmd_recover(args):
    channels = {}
    per_topic = Counter()
    total = 0
    complete = False
    error = None
    with open(args.file, "rb") as f:
        reader = StreamReader(StrictFile(f), validate_crcs=True)
        try:
            for record in reader.records:
                if isinstance(record, Channel):
                    channels[record.id] = record.topic
                elif isinstance(record, Message):
                    topic = channels.get(record.channel_id, f"<unknown channel {record.channel_id}>")
                    per_topic[topic] += 1
                    total += 1
                elif isinstance(record, Footer):
                    complete = True
        except Exception as e:  # truncation, CRC mismatch, corrupt chunk
            complete = False
            error = f"{type(e).__name__}: {e}"
    emit({"messages": total, "per_topic": dict(per_topic), "error": error, "complete": complete})


# ---------------------------------------------------------------------------------------------
# write-ros2
# ---------------------------------------------------------------------------------------------

RAW_ENCODINGS = {
    # cli name: (ROS encoding string, bytes per pixel)
    "rgb8": ("rgb8", 3), "bgr8": ("bgr8", 3), "mono8": ("mono8", 1),
    "yuv422": ("yuv422", 2), "yuyv": ("yuv422_yuy2", 2), "bayer_rggb8": ("bayer_rggb8", 1),
}
COMPRESSED_ENCODINGS = {"compressed-jpeg": "jpeg", "compressed-png": "png"}


def _ros_header(t):
    return {"stamp": {"sec": t // 1_000_000_000, "nanosec": t % 1_000_000_000}, "frame_id": FRAME_ID}


def _raw_frame(rgb, enc):
    """-> (encoding string, step, data bytes, expected RGB or None)."""
    h, w, _ = rgb.shape
    ros_enc, bpp = RAW_ENCODINGS[enc]
    expected = None
    if enc == "rgb8":
        pixels, expected = rgb, rgb
    elif enc == "bgr8":
        pixels, expected = rgb[:, :, ::-1], rgb
    elif enc == "mono8":
        gray = np.asarray(Image.fromarray(rgb, "RGB").convert("L"), dtype=np.uint8)
        pixels, expected = gray, np.repeat(gray[:, :, None], 3, axis=2)
    elif enc in ("yuv422", "yuyv"):
        pixels, (y, u, v) = rgb_to_yuv422(rgb, "uyvy" if enc == "yuv422" else "yuyv")
        expected = yuv422_expected_rgb(y, u, v)
    else:
        pixels = rgb_to_bayer_rggb(rgb)
    step = w * bpp + 8
    return ros_enc, step, pad_rows(np.ascontiguousarray(pixels), w * bpp), expected


def _camera_info(t, w, h):
    return {
        "header": _ros_header(t), "height": h, "width": w, "distortion_model": "plumb_bob",
        "d": [-0.1, 0.01, 0.001, -0.002, 0.0],
        "k": [700.0, 0.0, w / 2, 0.0, 710.0, h / 2, 0.0, 0.0, 1.0],
        "r": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        "p": [700.0, 0.0, w / 2, 0.0, 0.0, 710.0, h / 2, 0.0, 0.0, 0.0, 1.0, 0.0],
        "binning_x": 0, "binning_y": 0,
        "roi": {"x_offset": 0, "y_offset": 0, "height": 0, "width": 0, "do_rectify": False},
    }


def cmd_write_ros2(args):
    from mcap_ros2.writer import Writer as Ros2Writer

    compressed = args.encoding in COMPRESSED_ENCODINGS
    topic = args.topic or ("/camera/image_raw/compressed" if compressed else "/camera/image_raw")
    if args.expected_dir:
        os.makedirs(args.expected_dir, exist_ok=True)
    stamps, expected_files = [], []
    with open(args.out, "wb") as f:
        writer = Ros2Writer(f, compression=COMPRESSIONS[args.compression])
        if compressed:
            image_schema = writer.register_msgdef("sensor_msgs/msg/CompressedImage",
                                                  ros2_msgdef("sensor_msgs/msg/CompressedImage"))
        else:
            image_schema = writer.register_msgdef("sensor_msgs/msg/Image",
                                                  ros2_msgdef("sensor_msgs/msg/Image"))
        info_schema = None
        if args.camera_info:
            info_schema = writer.register_msgdef("sensor_msgs/msg/CameraInfo",
                                                 ros2_msgdef("sensor_msgs/msg/CameraInfo"))
        for i, path in enumerate(args.images):
            rgb = load_rgb(path)
            h, w, _ = rgb.shape
            t = stamp_ns(i)
            if compressed:
                fmt = COMPRESSED_ENCODINGS[args.encoding]
                if fmt == "jpeg":
                    data = encode_image(rgb, "JPEG", quality=95)
                    with Image.open(io.BytesIO(data)) as img:
                        expected = np.asarray(img.convert("RGB"), dtype=np.uint8)
                else:
                    data, expected = encode_image(rgb, "PNG"), rgb
                msg = {"header": _ros_header(t), "format": fmt, "data": data}
            else:
                enc, step, data, expected = _raw_frame(rgb, args.encoding)
                msg = {"header": _ros_header(t), "height": h, "width": w, "encoding": enc,
                       "is_bigendian": 0, "step": step, "data": data}
            writer.write_message(topic, image_schema, msg, log_time=t, publish_time=t, sequence=i)
            if info_schema is not None:
                writer.write_message("/camera/camera_info", info_schema, _camera_info(t, w, h),
                                     log_time=t, publish_time=t, sequence=i)
            if args.expected_dir and expected is not None:
                out_path = os.path.join(args.expected_dir, f"{i:06}.png")
                Image.fromarray(np.ascontiguousarray(expected), "RGB").save(out_path)
                expected_files.append(out_path)
            stamps.append(t)
        writer.finish()
    doc = {"frames": len(stamps), "topic": topic, "stamps_ns": stamps}
    if args.expected_dir:
        doc["expected"] = expected_files
    emit(doc)


# ---------------------------------------------------------------------------------------------
# write-foxglove
# ---------------------------------------------------------------------------------------------

def _json_schema(name, kind):
    stamp = {"type": "object", "properties": {"sec": {"type": "integer", "minimum": 0},
                                              "nsec": {"type": "integer", "minimum": 0}}}
    props = {"timestamp": stamp, "frame_id": {"type": "string"},
             "data": {"type": "string", "contentEncoding": "base64"}}
    if kind == "compressed":
        props["format"] = {"type": "string"}
    else:
        props.update({"width": {"type": "integer"}, "height": {"type": "integer"},
                      "encoding": {"type": "string"}, "step": {"type": "integer"}})
    return {"title": name, "type": "object", "properties": props}


def _foxglove_frame(path, kind):
    """-> dict of fields (data as bytes) for one input image."""
    if kind == "compressed":
        ext = os.path.splitext(path)[1].lower()
        fmt = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png"}.get(ext)
        if fmt is None:
            raise ToolError(f"{path}: compressed input must be .jpg/.jpeg or .png")
        with open(path, "rb") as f:
            return {"format": fmt, "data": f.read()}
    rgb = load_rgb(path)
    h, w, _ = rgb.shape
    return {"width": w, "height": h, "encoding": "rgb8", "step": 3 * w, "data": rgb.tobytes()}


def cmd_write_foxglove(args):
    topic = args.topic or "/cam/image"
    name = "foxglove.CompressedImage" if args.kind == "compressed" else "foxglove.RawImage"
    stamps = []
    with open(args.out, "wb") as f:
        if args.encoding == "protobuf":
            from google.protobuf.timestamp_pb2 import Timestamp
            from mcap_protobuf.writer import Writer as ProtobufWriter
            if args.kind == "compressed":
                from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage as Msg
            else:
                from foxglove_schemas_protobuf.RawImage_pb2 import RawImage as Msg
            writer = ProtobufWriter(f, compression=COMPRESSIONS[args.compression])
            for i, path in enumerate(args.images):
                t = stamp_ns(i)
                fields = _foxglove_frame(path, args.kind)
                msg = Msg(timestamp=Timestamp(seconds=t // 1_000_000_000, nanos=t % 1_000_000_000),
                          frame_id=FRAME_ID, **fields)
                writer.write_message(topic, msg, log_time=t, publish_time=t, sequence=i)
                stamps.append(t)
            writer.finish()
        else:
            writer = McapWriter(f, compression=COMPRESSIONS[args.compression])
            writer.start(profile="", library=f"mcap_tool.py (python mcap {mcap.__version__})")
            schema_id = writer.register_schema(
                name=name, encoding="jsonschema",
                data=json.dumps(_json_schema(name, args.kind)).encode())
            channel_id = writer.register_channel(topic=topic, message_encoding="json",
                                                 schema_id=schema_id)
            for i, path in enumerate(args.images):
                t = stamp_ns(i)
                fields = _foxglove_frame(path, args.kind)
                msg = {"timestamp": {"sec": t // 1_000_000_000, "nsec": t % 1_000_000_000},
                       "frame_id": FRAME_ID}
                msg.update(fields)
                msg["data"] = base64.b64encode(fields["data"]).decode("ascii")
                writer.add_message(channel_id=channel_id, log_time=t, publish_time=t,
                                   sequence=i, data=json.dumps(msg).encode())
                stamps.append(t)
            writer.finish()
    emit({"frames": len(stamps), "topic": topic, "stamps_ns": stamps})


# ---------------------------------------------------------------------------------------------
# truncate
# ---------------------------------------------------------------------------------------------

def cmd_truncate(args):
    if not 0.0 <= args.fraction <= 1.0:
        raise ToolError(f"--fraction must be in [0, 1], got {args.fraction}")
    with open(args.input, "rb") as f:
        data = f.read()
    keep = int(len(data) * args.fraction)
    with open(args.output, "wb") as f:
        f.write(data[:keep])
    emit({"input_bytes": len(data), "output_bytes": keep})


# ---------------------------------------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit 1 like every other error."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def build_parser():
    p = Parser(prog="mcap_tool.py", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    s = sub.add_parser("summary", help="seeking read; decode every message")
    s.add_argument("file")
    s.add_argument("--images-dir", help="save each decoded foxglove.CompressedImage as DIR/NNNNNN.png")
    s.set_defaults(func=cmd_summary)

    s = sub.add_parser("recover", help="record-by-record read ignoring the summary")
    s.add_argument("file")
    s.set_defaults(func=cmd_recover)

    s = sub.add_parser("write-ros2", help="write a ROS 2 image MCAP with mcap_ros2")
    s.add_argument("out")
    s.add_argument("--encoding", required=True,
                   choices=sorted(RAW_ENCODINGS) + sorted(COMPRESSED_ENCODINGS))
    s.add_argument("--topic")
    s.add_argument("--camera-info", action="store_true", help="also write /camera/camera_info")
    s.add_argument("--expected-dir", help="write the expected decoded RGB of frame i as DIR/NNNNNN.png")
    s.add_argument("--compression", choices=sorted(COMPRESSIONS), default="zstd")
    s.add_argument("images", nargs="+")
    s.set_defaults(func=cmd_write_ros2)

    s = sub.add_parser("write-foxglove", help="write foxglove.CompressedImage/RawImage")
    s.add_argument("out")
    s.add_argument("--kind", required=True, choices=["compressed", "raw"])
    s.add_argument("--encoding", required=True, choices=["protobuf", "json"])
    s.add_argument("--topic")
    s.add_argument("--compression", choices=sorted(COMPRESSIONS), default="zstd")
    s.add_argument("images", nargs="+")
    s.set_defaults(func=cmd_write_foxglove)

    s = sub.add_parser("truncate", help="copy the first FRACTION of IN's bytes to OUT")
    s.add_argument("input")
    s.add_argument("output")
    s.add_argument("--fraction", type=float, required=True)
    s.set_defaults(func=cmd_truncate)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except Exception as e:  # ToolError, McapError and the libraries' own (zstd, struct, ...)
        sys.stderr.write(f"mcap_tool.py {args.command}: {type(e).__name__}: {e}\n")
        out = getattr(args, "out", None)
        if args.command.startswith("write-") and out and os.path.exists(out):
            os.remove(out)  # never leave a half-written file behind
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
