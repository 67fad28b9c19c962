//! Issue 14, through the real binary: `--mcap` files read by the official Python MCAP
//! libraries (scripts/mcap_tool.py in `.venv-mcap`, made by `scripts/mcap-tools`), replays
//! of them and of ROS 2 / Foxglove files that those libraries wrote, files cut short or
//! killed mid-write, bad input, and the live Foxglove server with a real WebSocket client.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{lookout, run_with_deadline, succeed};

const WEIGHTS: &str = "models/yolox_nano.safetensors";
const CLIP: &str = "drives/udacity_test_video.mp4";

fn repo(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The reference tool, or `None` (skipped) when its venv is missing outside CI.
fn mcap_tool() -> Option<Command> {
    let python = repo(".venv-mcap/bin/python");
    if !python.exists() {
        let why = "the MCAP reference tools are not installed: run scripts/mcap-tools --install";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("skipping: {why}");
        return None;
    }
    let mut cmd = Command::new(python);
    cmd.arg(repo("scripts/mcap_tool.py"));
    Some(cmd)
}

/// Runs the reference tool and parses its JSON answer.
fn tool_json(args: &[&str]) -> Option<serde_json::Value> {
    let mut cmd = mcap_tool()?;
    cmd.args(args);
    // `output` reads stdout while the tool runs: its JSON is larger than a pipe's buffer.
    let out = cmd.output().expect("the reference tool starts");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("mcap_tool prints JSON"))
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `lookout run` with YOLOX-Nano, headless; `None` without the weights fixture.
fn run_cmd(source: &str, extra: &[&str]) -> Option<Command> {
    let weights = lookout::fixtures::require(WEIGHTS)?;
    let mut cmd = lookout();
    cmd.args(["run", "--headless", "--source", source])
        .arg("--weights")
        .arg(weights)
        .args(extra);
    Some(cmd)
}

fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_run_in_mcap_opens_in_the_reference_reader_with_every_frame_box_and_the_calibration() {
    let Some(clip) = lookout::fixtures::require(CLIP) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mcap, log) = (dir.path().join("run.mcap"), dir.path().join("run.jsonl"));
    let calib = repo("calibration/webcam-generic.toml");
    let extra = ["--mcap", s(&mcap), "--jsonl", s(&log), "--calib", s(&calib)];
    let Some(cmd) = run_cmd(s(&clip), &extra) else {
        return;
    };
    succeed(cmd);
    let Some(summary) = tool_json(&["summary", s(&mcap)]) else {
        return;
    };
    let records = jsonl(&log);
    let frames = records.len();
    assert!(frames > 30, "{frames} frames");
    assert_eq!(summary["has_summary"], true);
    assert_eq!(summary["compression"], serde_json::json!(["lz4"]));
    for topic in [
        "/camera/image",
        "/camera/calibration",
        "/lookout/annotations",
        "/lookout/detections",
        "/lookout/latency",
    ] {
        assert_eq!(summary["topics"][topic]["count"], frames, "{topic}");
    }
    assert_eq!(
        summary["topics"]["/camera/image"]["schema"],
        "foxglove.CompressedImage"
    );
    assert_eq!(
        summary["topics"]["/camera/image"]["message_encoding"],
        "protobuf"
    );
    let meta = &summary["metadata"]["lookout"];
    let weights = lookout::fixtures::require(WEIGHTS).unwrap();
    assert_eq!(
        meta["weights_sha256"],
        lookout::cli::file_sha256(&weights).unwrap()
    );
    assert!(meta["command_line"].as_str().unwrap().contains("--mcap"));
    assert_eq!(meta["privacy"], "off");
    assert!(meta["model"].as_str().unwrap().starts_with("yolox-nano"));
    // Every frame: the image at its capture time, its boxes as line loops, its record.
    let images = summary["images"].as_array().unwrap();
    let annotations = summary["annotations"].as_array().unwrap();
    let detections = summary["json_messages"]["/lookout/detections"]
        .as_array()
        .unwrap();
    assert_eq!((images.len(), annotations.len()), (frames, frames));
    let mut boxes = 0;
    // The video's timeline: the first frame's capture time plus each frame's pts.
    let base =
        records[0]["capture_wall_ns"].as_i64().unwrap() - records[0]["pts_ns"].as_i64().unwrap();
    for (i, record) in records.iter().enumerate() {
        let (image, ann) = (&images[i], &annotations[i]);
        let log_time = base + record["pts_ns"].as_i64().unwrap();
        assert_eq!(image["log_time"].as_i64(), Some(log_time), "frame {i}");
        assert_eq!(ann["log_time"].as_i64(), Some(log_time), "frame {i}");
        assert_eq!(
            (image["width"].as_u64(), image["height"].as_u64()),
            (Some(1280), Some(720))
        );
        assert_eq!(image["format"], "jpeg");
        assert_eq!(image["frame_id"], "camera");
        let n = record["detections"].as_array().unwrap().len();
        assert_eq!(ann["boxes"], n, "frame {i}");
        assert!(
            ann["types"].as_array().unwrap().iter().all(|t| t == 2),
            "LINE_LOOP"
        );
        assert!(ann["points_per_box"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p == 4));
        for (text, d) in ann["texts"]
            .as_array()
            .unwrap()
            .iter()
            .zip(record["detections"].as_array().unwrap())
        {
            let text = text.as_str().unwrap();
            assert!(text.contains(d["class"].as_str().unwrap()), "{text}");
            if d.get("distance_m").is_some() {
                assert!(text.contains(" m"), "{text}: the distance is in the label");
            }
        }
        assert_eq!(detections[i]["seq"], record["seq"]);
        assert_eq!(detections[i]["detections"], record["detections"]);
        boxes += n;
    }
    assert!(boxes > 0, "the clip has cars");
    let cal = &summary["calibration"][0];
    assert_eq!(
        (cal["width"].as_u64(), cal["height"].as_u64()),
        (Some(1280), Some(720))
    );
    assert_eq!(cal["K"][0], 910.0);
    assert_eq!(cal["distortion_model"], "plumb_bob");
    assert_eq!(cal["D"][0], -0.08);
}

#[test]
fn a_replay_of_a_lossless_mcap_gives_the_runs_detections_and_timeline() {
    let Some(clip) = lookout::fixtures::require(CLIP) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mcap = dir.path().join("run.mcap");
    let (first, replay) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    let common = ["--imgsz", "320", "--max-frames", "12"];
    let Some(mut cmd) = run_cmd(s(&clip), &common) else {
        return;
    };
    cmd.args([
        "--mcap",
        s(&mcap),
        "--mcap-images",
        "png",
        "--jsonl",
        s(&first),
    ]);
    succeed(cmd);
    let mut cmd = run_cmd(s(&mcap), &common).unwrap();
    cmd.args(["--jsonl", s(&replay)]);
    let out = succeed(cmd);
    let (a, b) = (jsonl(&first), jsonl(&replay));
    assert_eq!(a.len(), 12);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        // Boxes, scores, track ids and ages: the replay keeps the video's timestamps.
        assert_eq!(x["detections"], y["detections"], "frame {}", x["seq"]);
        assert_eq!(x["pts_ns"], y["pts_ns"], "frame {}", x["seq"]);
    }
    // The log time is the replay's capture time.
    let base = a[0]["capture_wall_ns"].as_u64().unwrap();
    for y in &b {
        let expected = base + y["pts_ns"].as_u64().unwrap();
        assert_eq!(y["capture_wall_ns"].as_u64(), Some(expected));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("mcap"), "{stderr}");
}

/// Frames of a drive that `lookout record --frame-format png` made from `source`.
fn recorded_frames(source: &Path, extra: &[&str]) -> Vec<image::RgbImage> {
    let dir = tempfile::tempdir().unwrap();
    let drive = dir.path().join("drive");
    let mut cmd = lookout();
    cmd.args(["record", "--source", s(source), "--out", s(&drive)])
        .args(["--frame-format", "png"])
        .args(extra);
    succeed(cmd);
    let mut files: Vec<_> = std::fs::read_dir(drive.join("frames"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| lookout::imageio::read_rgb(p).unwrap())
        .collect()
}

/// The largest and the mean per-channel difference.
fn diff(a: &image::RgbImage, b: &image::RgbImage) -> (u8, f64) {
    assert_eq!(a.dimensions(), b.dimensions());
    let mut max = 0u8;
    let mut sum = 0u64;
    for (x, y) in a.as_raw().iter().zip(b.as_raw()) {
        let d = x.abs_diff(*y);
        max = max.max(d);
        sum += d as u64;
    }
    (max, sum as f64 / a.as_raw().len() as f64)
}

/// Two fixture images as PNG (inputs whose pixels every decoder agrees on); `None` without
/// the fixtures.
fn png_inputs(dir: &Path) -> Option<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for name in ["zidane.jpg", "bus.jpg"] {
        let image =
            lookout::imageio::read_rgb(&lookout::fixtures::require(&format!("images/{name}"))?)
                .unwrap();
        // One size for both (a drive holds one), with an even width for the 4:2:2 encodings.
        let cropped = image::imageops::crop_imm(&image, 0, 0, 800, 480).to_image();
        let path = dir.join(name.replace(".jpg", ".png"));
        cropped.save(&path).unwrap();
        paths.push(path);
    }
    Some(paths)
}

#[test]
fn ros2_images_written_by_mcap_ros2_support_replay_with_their_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let Some(inputs) = png_inputs(dir.path()) else {
        return;
    };
    let sources: Vec<image::RgbImage> = inputs
        .iter()
        .map(|p| lookout::imageio::read_rgb(p).unwrap())
        .collect();
    // (encoding, the largest difference allowed to the expected pixels)
    let cases = [
        ("bgr8", 0),
        ("rgb8", 0),
        ("mono8", 0),
        ("yuv422", 1),
        ("yuyv", 1),
        ("compressed-png", 0),
        ("compressed-jpeg", 2),
        ("bayer_rggb8", u8::MAX),
    ];
    for (encoding, tolerance) in cases {
        let file = dir.path().join(format!("{encoding}.mcap"));
        let expected_dir = dir.path().join(format!("expected-{encoding}"));
        let mut args = vec![
            "write-ros2",
            s(&file),
            "--encoding",
            encoding,
            "--camera-info",
        ];
        args.extend(["--expected-dir", s(&expected_dir)]);
        args.extend(inputs.iter().map(|p| s(p)));
        let Some(written) = tool_json(&args) else {
            return;
        };
        assert_eq!(written["frames"], 2);
        let frames = recorded_frames(&file, &[]);
        assert_eq!(frames.len(), 2, "{encoding}");
        for (i, frame) in frames.iter().enumerate() {
            if encoding == "bayer_rggb8" {
                // Demosaicing is not unique: close to the scene, not equal to one decoder.
                let (_, mean) = diff(frame, &sources[i]);
                assert!(mean < 12.0, "{encoding} frame {i}: mean difference {mean}");
                continue;
            }
            let expected = written["expected"][i].as_str().unwrap();
            let expected = lookout::imageio::read_rgb(Path::new(expected)).unwrap();
            let (max, mean) = diff(frame, &expected);
            assert!(
                max <= tolerance && mean < 0.5,
                "{encoding} frame {i}: max {max}, mean {mean}"
            );
        }
    }
}

#[test]
fn foxglove_images_in_protobuf_and_json_replay_with_their_pixels_and_calibration_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let Some(inputs) = png_inputs(dir.path()) else {
        return;
    };
    for kind in ["compressed", "raw"] {
        for encoding in ["protobuf", "json"] {
            let file = dir.path().join(format!("{kind}-{encoding}.mcap"));
            let mut args = vec![
                "write-foxglove",
                s(&file),
                "--kind",
                kind,
                "--encoding",
                encoding,
            ];
            args.extend(inputs.iter().map(|p| s(p)));
            let Some(written) = tool_json(&args) else {
                return;
            };
            assert_eq!(written["frames"], 2);
            let frames = recorded_frames(&file, &[]);
            assert_eq!(frames.len(), 2, "{kind} {encoding}");
            for (frame, input) in frames.iter().zip(&inputs) {
                assert_eq!(
                    diff(frame, &lookout::imageio::read_rgb(input).unwrap()).0,
                    0,
                    "{kind} {encoding}"
                );
            }
        }
    }
    // A ROS 2 CameraInfo becomes the camera of a recording made from the file.
    let file = dir.path().join("info.mcap");
    let mut args = vec![
        "write-ros2",
        s(&file),
        "--encoding",
        "rgb8",
        "--camera-info",
    ];
    args.extend(inputs.iter().take(1).map(|p| s(p)));
    tool_json(&args).unwrap();
    let out = dir.path().join("again.mcap");
    let mut cmd = lookout();
    cmd.args([
        "record",
        "--source",
        s(&file),
        "--format",
        "mcap",
        "--out",
        s(&out),
    ]);
    succeed(cmd);
    let summary = tool_json(&["summary", s(&out)]).unwrap();
    let cal = &summary["calibration"][0];
    let width = lookout::imageio::read_rgb(&inputs[0]).unwrap().width() as f64;
    assert_eq!(cal["K"][0], 700.0);
    assert_eq!(cal["K"][2], width / 2.0);
    assert_eq!(cal["D"][0], -0.1);
    assert_eq!(summary["topics"]["/camera/image"]["count"], 1);
}

/// A lookout MCAP file of the clip's first `frames` frames (JPEG images).
fn lookout_mcap(dir: &Path, frames: u32) -> Option<PathBuf> {
    let clip = lookout::fixtures::require(CLIP)?;
    let mcap = dir.join("run.mcap");
    let n = frames.to_string();
    let mut cmd = lookout();
    cmd.args([
        "record",
        "--source",
        s(&clip),
        "--format",
        "mcap",
        "--out",
        s(&mcap),
    ])
    .args(["--max-frames", &n]);
    succeed(cmd);
    Some(mcap)
}

#[test]
fn a_cut_mcap_replays_its_complete_chunks_and_ends_early_with_status_3() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mcap) = lookout_mcap(dir.path(), 38) else {
        return;
    };
    let bytes = std::fs::read(&mcap).unwrap();
    let cut = dir.path().join("cut.mcap");
    std::fs::write(&cut, &bytes[..bytes.len() * 7 / 10]).unwrap();
    let log = dir.path().join("cut.jsonl");
    let Some(mut cmd) = run_cmd(s(&cut), &["--imgsz", "128", "--jsonl", s(&log)]) else {
        return;
    };
    let out = run_with_deadline(&mut cmd, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("ends early"), "{stderr}");
    let frames = jsonl(&log).len();
    assert!(frames > 0 && frames < 38, "{frames} frames before the cut");
}

#[test]
fn a_killed_run_leaves_an_mcap_readable_up_to_its_last_flush_and_a_stopped_one_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    for (name, signal) in [("kill", libc::SIGKILL), ("term", libc::SIGTERM)] {
        let mcap = dir.path().join(format!("{name}.mcap"));
        let Some(mut cmd) = run_cmd(
            "synthetic:320x240@20:live",
            &["--imgsz", "128", "--mcap", s(&mcap)],
        ) else {
            return;
        };
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(3500));
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let stopped = Instant::now();
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let Some(recovered) = tool_json(&["recover", s(&mcap)]) else {
            return;
        };
        let images = recovered["per_topic"]["/camera/image"]
            .as_u64()
            .unwrap_or(0);
        if signal == libc::SIGKILL {
            // Chunks are flushed every second: at least two seconds' frames survive.
            assert!(images >= 20, "{recovered}");
            assert_eq!(recovered["complete"], false);
            // lookout replays it up to the cut and says so.
            let cmd = run_cmd(s(&mcap), &["--imgsz", "128"]).unwrap();
            let out = run_with_deadline(cmd, Duration::from_secs(120));
            assert_eq!(
                out.status.code(),
                Some(3),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            assert!(status.success(), "after SIGTERM: {stderr}");
            assert!(stopped.elapsed() < Duration::from_secs(2));
            assert_eq!(recovered["complete"], true, "{recovered}");
            let summary = tool_json(&["summary", s(&mcap)]).unwrap();
            assert_eq!(summary["has_summary"], true);
            assert_eq!(summary["topics"]["/camera/image"]["count"], images);
            assert!(images >= 30, "{images}");
        }
    }
}

/// Writes an MCAP file with one channel and a message on it (the test's own writer).
fn one_channel_mcap(path: &Path, topic: &str, schema: &str, encoding: &str, data: &[u8]) {
    let mut writer = mcap::Writer::new(std::io::BufWriter::new(
        std::fs::File::create(path).unwrap(),
    ))
    .unwrap();
    let schema_id = writer.add_schema(schema, "protobuf", b"").unwrap();
    let channel = writer
        .add_channel(schema_id, topic, encoding, &BTreeMap::new())
        .unwrap();
    let header = mcap::records::MessageHeader {
        channel_id: channel,
        sequence: 0,
        log_time: 1,
        publish_time: 1,
    };
    writer.write_to_known_channel(&header, data).unwrap();
    writer.finish().unwrap();
}

#[test]
fn bad_mcap_input_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let not_mcap = dir.path().join("not.mcap");
    std::fs::write(&not_mcap, "hello, not an mcap file").unwrap();
    let gps = dir.path().join("gps.mcap");
    one_channel_mcap(&gps, "/gps", "foxglove.LocationFix", "protobuf", b"");
    let float = dir.path().join("float.mcap");
    let raw = foxglove::schemas::RawImage {
        width: 2,
        height: 1,
        encoding: "32FC1".into(),
        step: 8,
        data: vec![0u8; 8].into(),
        ..Default::default()
    };
    let mut data = Vec::new();
    prost::Message::encode(&raw, &mut data).unwrap();
    one_channel_mcap(&float, "/depth", "foxglove.RawImage", "protobuf", &data);
    let cases: [(&Path, &[&str], &str); 4] = [
        (&not_mcap, &[], "is not an MCAP file"),
        (&gps, &[], "has no image topic lookout reads"),
        (&float, &[], "image encoding `32FC1` is not supported"),
        (
            &float,
            &["--topic", "/nope"],
            "has no topic `/nope`; its topics: /depth (foxglove.RawImage in protobuf)",
        ),
    ];
    for (file, extra, expected) in cases {
        let mut cmd = lookout();
        cmd.args(["record", "--source", s(file), "--format", "mcap"])
            .arg("--out")
            .arg(dir.path().join("out.mcap"))
            .args(extra);
        let out = run_with_deadline(cmd, Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}: {stderr}", file.display());
        assert!(stderr.contains(expected), "{}: {stderr}", file.display());
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// A text frame of the live protocol.
fn next_json(ws: &mut tungstenite::WebSocket<TcpStream>) -> serde_json::Value {
    loop {
        match ws.read().unwrap() {
            tungstenite::Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            tungstenite::Message::Binary(_) => continue,
            _ => continue,
        }
    }
}

#[test]
fn foxglove_clients_get_the_live_channels_and_the_metrics_count_them() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("metrics.json");
    let Some(mut cmd) = run_cmd(
        "synthetic:320x240@20:live",
        &[
            "--imgsz",
            "128",
            "--foxglove",
            &addr,
            "--metrics",
            s(&metrics),
        ],
    ) else {
        return;
    };
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let stream = loop {
        match TcpStream::connect(&addr) {
            Ok(stream) => break stream,
            Err(_) if started.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => {
                child.kill().ok();
                panic!("lookout's server never listened: {e}");
            }
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request =
        tungstenite::client::IntoClientRequest::into_client_request(format!("ws://{addr}"))
            .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "foxglove.websocket.v1".parse().unwrap(),
    );
    let (mut ws, response) = tungstenite::client(request, stream).unwrap();
    assert_eq!(
        response.headers()["Sec-WebSocket-Protocol"],
        "foxglove.websocket.v1"
    );
    let info = next_json(&mut ws);
    assert_eq!(info["op"], "serverInfo");
    let advertise = next_json(&mut ws);
    assert_eq!(advertise["op"], "advertise");
    let channels = advertise["channels"].as_array().unwrap();
    let id_of = |topic: &str| {
        channels
            .iter()
            .find(|c| c["topic"] == topic)
            .unwrap_or_else(|| panic!("{topic} advertised"))["id"]
            .as_u64()
            .unwrap()
    };
    let image = channels
        .iter()
        .find(|c| c["topic"] == "/camera/image")
        .unwrap();
    assert_eq!(image["schemaName"], "foxglove.CompressedImage");
    assert_eq!(image["encoding"], "protobuf");
    let subscribe = serde_json::json!({"op": "subscribe", "subscriptions": [
        {"id": 1, "channelId": id_of("/camera/image")},
        {"id": 2, "channelId": id_of("/lookout/annotations")},
    ]});
    ws.send(tungstenite::Message::Text(subscribe.to_string().into()))
        .unwrap();
    let mut seen = BTreeMap::<u32, u32>::new();
    let mut last_time = 0u64;
    while seen.get(&1).copied().unwrap_or(0) < 10 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "too few messages: {seen:?}"
        );
        let tungstenite::Message::Binary(bytes) = ws.read().unwrap() else {
            continue;
        };
        assert_eq!(bytes[0], 1, "Message Data opcode");
        let sub = u32::from_le_bytes(bytes[1..5].try_into().unwrap());
        let time = u64::from_le_bytes(bytes[5..13].try_into().unwrap());
        let payload = &bytes[13..];
        if sub == 1 {
            let msg: foxglove::schemas::CompressedImage = prost::Message::decode(payload).unwrap();
            let jpeg = image::load_from_memory(&msg.data).unwrap();
            assert_eq!((jpeg.width(), jpeg.height()), (320, 240));
            assert!(time >= last_time, "log times in order");
            last_time = time;
        } else {
            let _: foxglove::schemas::ImageAnnotations = prost::Message::decode(payload).unwrap();
        }
        *seen.entry(sub).or_default() += 1;
    }
    assert!(seen.get(&2).copied().unwrap_or(0) >= 5, "{seen:?}");
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains(&format!("ws://{addr}")), "{stderr}");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&metrics).unwrap()).unwrap();
    let live = &metrics["foxglove"];
    assert_eq!(live["clients_total"], 1, "{metrics}");
    assert!(live["sent"].as_u64().unwrap() >= 15, "{live}");
    assert!(live["dropped"].is_u64(), "{live}");
}

#[test]
fn a_busy_foxglove_port_is_refused_before_the_run() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let Some(cmd) = run_cmd(
        "synthetic:64x48@5",
        &["--foxglove", &addr, "--max-frames", "3"],
    ) else {
        return;
    };
    let out = run_with_deadline(cmd, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&addr) && stderr.contains("--foxglove"),
        "{stderr}"
    );
}

/// Review of #14: with `--undistort` the stored frames are undistorted, so the file's camera
/// must have no distortion (it had the lens's, and a replay applied it twice).
#[test]
fn an_undistorted_run_stores_a_camera_without_distortion() {
    let Some(clip) = lookout::fixtures::require(CLIP) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mcap = dir.path().join("u.mcap");
    let calib = repo("calibration/webcam-generic.toml");
    let extra = [
        "--imgsz",
        "128",
        "--max-frames",
        "2",
        "--undistort",
        "--calib",
        s(&calib),
        "--mcap",
        s(&mcap),
    ];
    let Some(cmd) = run_cmd(s(&clip), &extra) else {
        return;
    };
    succeed(cmd);
    let Some(summary) = tool_json(&["summary", s(&mcap)]) else {
        return;
    };
    let d = summary["calibration"][0]["D"].as_array().unwrap().clone();
    assert!(d.iter().all(|v| v.as_f64() == Some(0.0)), "{d:?}");
    assert_eq!(summary["calibration"][0]["K"][0], 910.0);
}
