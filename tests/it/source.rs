//! Integration tests: source (video through ffmpeg, drives, KITTI raw, pixel conversions).

use std::path::{Path, PathBuf};
use std::process::Command;

use lookout::drive::{DriveManifest, DriveWriter, FrameFileFormat};
use lookout::source::convert::{mjpeg_to_rgb, nv12_to_rgb, yuyv_to_rgb, ConvertError};
use lookout::source::ffmpeg::{FfmpegTools, VideoSource, FFMPEG_ENV};
use lookout::source::DriveReader;
use lookout::source::{self, FrameSource, SourceError, SourceOptions, SourceSpec};
use lookout::types::Frame;

const VIDEO: &str = "drives/udacity_test_video.mp4";

fn drain(source: &mut dyn FrameSource) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some(frame) = source.next_frame().unwrap() {
        frames.push(frame);
    }
    frames
}

/// ffmpeg's own RGB24 conversion of `args` (input options and input), as raw bytes.
fn ffmpeg_rgb(args: &[&str]) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error"])
        .args(args)
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn ffmpeg_raw(input: &Path, pix_fmt: &str) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(input)
        .args(["-f", "rawvideo", "-pix_fmt", pix_fmt, "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// (max, mean) absolute difference of two equally long byte buffers.
fn differences(a: &[u8], b: &[u8]) -> (u8, f64) {
    assert_eq!(a.len(), b.len());
    let max = a
        .iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0);
    let sum: u64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    (max, sum as f64 / a.len() as f64)
}

#[test]
fn video_yields_38_frames_40ms_apart() {
    let Some(path) = lookout::fixtures::require(VIDEO) else {
        return;
    };
    let spec = SourceSpec::parse(path.to_str().unwrap(), &SourceOptions::default()).unwrap();
    assert_eq!(spec, SourceSpec::Video(path.clone()));
    assert!(!spec.is_live());
    let mut source = source::open(&spec).unwrap();
    let info = source.info();
    assert_eq!(info.size, Some((1280, 720)));
    assert_eq!(info.nominal_fps, Some(25.0));
    assert_eq!(info.frame_count, Some(38));
    let started = std::time::Instant::now();
    let frames = drain(source.as_mut());
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "decoded 38 frames 1280x720 in {secs:.3} s ({:.0} fps)",
        38.0 / secs
    );
    assert_eq!(frames.len(), 38);
    for (i, frame) in frames.iter().enumerate() {
        assert_eq!(frame.seq, i as u64);
        assert_eq!((frame.width(), frame.height()), (1280, 720));
        assert_eq!(frame.pts_ns, Some(i as i64 * 40_000_000), "frame {i}");
    }
    assert!(frames
        .windows(2)
        .all(|w| w[1].capture_mono_ns >= w[0].capture_mono_ns));
    let info = source.info();
    assert!(!info.ended_early, "{info:?}");
    // After the end, the source stays ended.
    assert!(source.next_frame().unwrap().is_none());
}

#[test]
fn first_video_frame_matches_ffmpeg_exactly() {
    let Some(path) = lookout::fixtures::require(VIDEO) else {
        return;
    };
    let mut source = VideoSource::open_file(&path).unwrap();
    let frame = source.next_frame().unwrap().unwrap();
    let path_text = path.to_str().unwrap();
    let reference = ffmpeg_rgb(&["-i", path_text, "-map", "0:v:0", "-frames:v", "1"]);
    assert_eq!(reference.len(), 1280 * 720 * 3);
    assert!(
        frame.image.as_raw() == &reference,
        "first frame differs from ffmpeg's"
    );
}

#[test]
fn dropping_a_video_source_reaps_ffmpeg() {
    let Some(path) = lookout::fixtures::require(VIDEO) else {
        return;
    };
    let mut source = VideoSource::open_file(&path).unwrap();
    source.next_frame().unwrap().unwrap();
    let pid = source.child_pid();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    drop(source);
    // Neither running nor a zombie: the process entry is gone.
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "ffmpeg {pid} left behind"
    );
}

#[test]
fn truncated_video_gives_frames_then_an_early_end() {
    let Some(path) = lookout::fixtures::require(VIDEO) else {
        return;
    };
    let bytes = std::fs::read(&path).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let half = tmp.path().join("half.mp4");
    std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
    let mut source = VideoSource::open_file(&half).unwrap();
    let frames = drain(&mut source);
    assert!(
        !frames.is_empty() && frames.len() < 38,
        "{} frames",
        frames.len()
    );
    assert!(source.ended_early());
    let info = source.info();
    assert!(info.ended_early);
    let note = info.note.unwrap();
    eprintln!("{note}");
    assert!(
        note.contains(&format!("ended early after {} of 38 frames", frames.len())),
        "{note}"
    );
}

#[test]
fn missing_ffmpeg_says_how_to_install_it() {
    let Some(path) = lookout::fixtures::require(VIDEO) else {
        return;
    };
    let tools = FfmpegTools {
        ffmpeg: PathBuf::from("/nonexistent/ffmpeg"),
        ffprobe: PathBuf::from("/nonexistent/ffprobe"),
    };
    let err = VideoSource::open_file_with(&tools, &path).err().unwrap();
    assert!(matches!(err, SourceError::FfmpegMissing { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("install ffmpeg (apt-get install -y ffmpeg)"),
        "{err}"
    );

    // The same through the environment lookup, without touching this process's environment.
    let err =
        FfmpegTools::resolve(|k| (k == FFMPEG_ENV).then(|| "/nonexistent".into())).unwrap_err();
    assert!(err.to_string().contains("LOOKOUT_FFMPEG"), "{err}");
}

#[test]
fn stream_errors_mask_credentials() {
    let url = "rtsp://admin:s3cret@127.0.0.1:9/live";
    let spec = SourceSpec::parse(url, &SourceOptions::default()).unwrap();
    assert!(spec.is_live());
    let err = source::open(&spec)
        .err()
        .expect("nothing listens on port 9");
    let text = err.to_string();
    eprintln!("{text}");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains("admin:***@127.0.0.1"), "{text}");
}

fn video_frames(count: usize) -> Option<Vec<Frame>> {
    let path = lookout::fixtures::require(VIDEO)?;
    let mut source = VideoSource::open_file(&path).unwrap();
    Some(
        (0..count)
            .map(|_| source.next_frame().unwrap().unwrap())
            .collect(),
    )
}

fn record(dir: &Path, frames: &[Frame], format: FrameFileFormat) -> u64 {
    let (w, h) = (frames[0].width(), frames[0].height());
    let manifest = DriveManifest::new("video udacity_test_video.mp4", w, h, 25.0, format);
    let mut writer = DriveWriter::create(dir, manifest).unwrap();
    let started = std::time::Instant::now();
    for frame in frames {
        writer.write_frame(frame).unwrap();
    }
    let per_frame_ms = started.elapsed().as_secs_f64() * 1e3 / frames.len() as f64;
    eprintln!("{format:?} {w}x{h}: {per_frame_ms:.1} ms per frame written");
    writer.finish().unwrap()
}

#[test]
fn drive_round_trip_png_exact_and_jpg_close() {
    let Some(frames) = video_frames(4) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    for format in [FrameFileFormat::Png, FrameFileFormat::Jpg] {
        let dir = tmp.path().join(format.extension());
        assert_eq!(record(&dir, &frames, format), 4);
        let spec = SourceSpec::parse(dir.to_str().unwrap(), &SourceOptions::default()).unwrap();
        assert_eq!(spec, SourceSpec::Drive(dir.clone()));
        let mut reader = source::open(&spec).unwrap();
        let replayed = drain(reader.as_mut());
        assert_eq!(replayed.len(), 4);
        for (original, copy) in frames.iter().zip(&replayed) {
            assert_eq!(copy.seq, original.seq);
            let recorded = original.capture_mono_ns - frames[0].capture_mono_ns;
            assert_eq!(copy.pts_ns, Some(recorded as i64));
            let (max, mean) = differences(original.image.as_raw(), copy.image.as_raw());
            match format {
                FrameFileFormat::Png => assert_eq!(max, 0),
                // JPEG quality 95 on real dashcam content.
                FrameFileFormat::Jpg => {
                    eprintln!("jpg q95 round trip: max {max}, mean {mean:.3}");
                    assert!(mean < 2.0, "mean abs difference {mean}")
                }
            }
        }
        let info = reader.info();
        assert_eq!(info.skipped_frames, 0);
        assert_eq!(info.size, Some((1280, 720)));
        assert_eq!(info.frame_count, Some(4));
    }
}

#[test]
fn drive_keeps_calibration_and_refuses_a_non_empty_folder() {
    let frame = Frame {
        seq: 0,
        capture_mono_ns: 5,
        capture_wall_ns: 6,
        pts_ns: None,
        image: image::RgbImage::new(8, 4),
    };
    let tmp = tempfile::tempdir().unwrap();
    let calib = tmp.path().join("calib_cam_to_cam.txt");
    std::fs::write(&calib, "P_rect_02: 1 0 0 0 0 1 0 0 0 0 1 0\n").unwrap();
    let dir = tmp.path().join("drive");
    let manifest = DriveManifest::new("camera:0", 8, 4, 30.0, FrameFileFormat::Png);
    let mut writer = DriveWriter::create(&dir, manifest.clone()).unwrap();
    writer.add_calibration(&calib).unwrap();
    writer.write_frame(&frame).unwrap();
    let wrong_size = Frame {
        seq: 1,
        image: image::RgbImage::new(4, 4),
        ..frame.clone()
    };
    let err = writer.write_frame(&wrong_size).unwrap_err().to_string();
    assert!(err.contains("is 4x4 but drive"), "{err}");
    let err = writer.write_frame(&frame).unwrap_err().to_string();
    assert!(err.contains("increasing seq order"), "{err}");
    writer.finish().unwrap();

    let reader = DriveReader::open(&dir).unwrap();
    assert_eq!(reader.manifest().frame_count, Some(1));
    let calib_in_drive = reader.calibration_path().unwrap();
    assert!(calib_in_drive.starts_with(dir.canonicalize().unwrap()));
    assert!(DriveWriter::create(&dir, manifest).is_err());
}

#[test]
fn damaged_drive_replays_the_rest_and_counts_the_damage() {
    let frames: Vec<Frame> = (0..6)
        .map(|i| Frame {
            seq: i,
            capture_mono_ns: 1_000 + i * 100_000_000,
            capture_wall_ns: 0,
            pts_ns: None,
            image: image::RgbImage::from_pixel(16, 8, image::Rgb([i as u8 * 40, 7, 9])),
        })
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("drive");
    record(&dir, &frames, FrameFileFormat::Jpg);
    // A kill mid-write: the last index line loses its end.
    let index = dir.join("index.csv");
    let text = std::fs::read_to_string(&index).unwrap();
    std::fs::write(&index, &text[..text.len() - 6]).unwrap();
    std::fs::remove_file(dir.join("frames/00000001.jpg")).unwrap();
    let corrupt = dir.join("frames/00000003.jpg");
    let jpeg = std::fs::read(&corrupt).unwrap();
    std::fs::write(&corrupt, &jpeg[..40]).unwrap();

    let mut reader = DriveReader::open(&dir).unwrap();
    let replayed = drain(&mut reader);
    let pts: Vec<_> = replayed.iter().map(|f| f.pts_ns.unwrap()).collect();
    assert_eq!(pts, [0, 200_000_000, 400_000_000]);
    assert_eq!(
        replayed.iter().map(|f| f.seq).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let stats = reader.stats();
    assert_eq!(stats.torn_index_lines, 1);
    assert_eq!(stats.missing_files, 1);
    assert_eq!(stats.corrupt_files, 1);
    assert_eq!(reader.skipped_frames(), 3);
    let info = reader.info();
    assert_eq!(info.skipped_frames, 3);
    assert!(info.note.unwrap().contains("1 missing"));
}

#[test]
fn drive_frame_paths_outside_the_drive_are_refused() {
    let frames: Vec<Frame> = (0..2)
        .map(|i| Frame {
            seq: i,
            capture_mono_ns: i * 10,
            capture_wall_ns: 0,
            pts_ns: Some(i as i64),
            image: image::RgbImage::new(4, 4),
        })
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("secret.png");
    image::RgbImage::new(4, 4).save(&outside).unwrap();
    let dir = tmp.path().join("drive");
    record(&dir, &frames, FrameFileFormat::Png);
    std::os::unix::fs::symlink(&outside, dir.join("frames/link.png")).unwrap();
    let mut index = std::fs::read_to_string(dir.join("index.csv")).unwrap();
    index.push_str("2,20,0,,../secret.png\n");
    index.push_str(&format!("3,30,0,,{}\n", outside.display()));
    index.push_str("4,40,0,,frames/link.png\n");
    std::fs::write(dir.join("index.csv"), index).unwrap();

    let mut reader = DriveReader::open(&dir).unwrap();
    assert_eq!(drain(&mut reader).len(), 2);
    assert_eq!(reader.stats().refused_paths, 3);
}

#[test]
fn kitti_raw_folder_replays_with_recorded_times() {
    let Some(image_dir) = lookout::fixtures::require("kitti/object/image_2") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let drive = crate::common::kitti_raw_folder(&image_dir, tmp.path());
    std::fs::write(tmp.path().join("calib_cam_to_cam.txt"), "calib_time: x\n").unwrap();

    let spec = SourceSpec::parse(drive.to_str().unwrap(), &SourceOptions::default()).unwrap();
    assert_eq!(spec, SourceSpec::KittiRaw(drive.clone()));
    let mut source = source::open(&spec).unwrap();
    assert_eq!(
        source.calibration_path(),
        Some(tmp.path().join("calib_cam_to_cam.txt"))
    );
    let frames = drain(source.as_mut());
    let pts: Vec<_> = frames.iter().map(|f| f.pts_ns.unwrap()).collect();
    assert_eq!(pts, [0, 110_075_639, 220_156_453]);
    let first_size = image::image_dimensions(image_dir.join("000000.png")).unwrap();
    assert_eq!(frames[0].image.dimensions(), first_size);
    let fps = source.info().nominal_fps.unwrap();
    assert!((fps - 9.08).abs() < 0.01, "{fps}");
}

#[test]
fn image_glob_plays_in_name_order_at_the_given_rate() {
    let Some(dir) = lookout::fixtures::require("images/udacity") else {
        return;
    };
    let opts = SourceOptions {
        images_fps: 5.0,
        ..SourceOptions::default()
    };
    let spec = SourceSpec::parse(dir.join("test*.jpg").to_str().unwrap(), &opts).unwrap();
    let mut source = source::open(&spec).unwrap();
    let frames = drain(source.as_mut());
    assert_eq!(frames.len(), 6);
    assert_eq!(frames[5].pts_ns, Some(1_000_000_000));
    assert_eq!((frames[0].width(), frames[0].height()), (1280, 720));
}

/// A real image converted to YUYV/NV12 by ffmpeg, then back to RGB by ffmpeg and by us.
/// The reference is swscale's exact path with chroma repeated like ours (`neighbor`,
/// `accurate_rnd`, `full_chroma_int`, `bitexact`): same BT.601 limited-range maths, off by at
/// most 1 from fixed-point rounding. (swscale's default fast path is itself off by up to 3 on
/// flat colours, e.g. Y=235 → 253 instead of 255, and interpolates chroma, hence not used.)
#[test]
fn yuyv_and_nv12_match_ffmpeg_within_rounding() {
    let Some(jpg) = lookout::fixtures::require("images/dog.jpg") else {
        return;
    };
    let (w, h) = (768, 576);
    let size = format!("{w}x{h}");
    let tmp = tempfile::tempdir().unwrap();
    type Convert = fn(&[u8], u32, u32) -> Result<image::RgbImage, ConvertError>;
    let converters: [(&str, Convert); 2] = [("yuyv422", yuyv_to_rgb), ("nv12", nv12_to_rgb)];
    for (pix_fmt, convert) in converters {
        let raw = ffmpeg_raw(&jpg, pix_fmt);
        let raw_path = tmp.path().join(format!("dog.{pix_fmt}"));
        std::fs::write(&raw_path, &raw).unwrap();
        let reference = ffmpeg_rgb(&[
            "-f",
            "rawvideo",
            "-pix_fmt",
            pix_fmt,
            "-s",
            &size,
            "-i",
            raw_path.to_str().unwrap(),
            "-sws_flags",
            "neighbor+accurate_rnd+full_chroma_int+bitexact",
        ]);
        let ours = convert(&raw, w, h).unwrap();
        let (max, mean) = differences(ours.as_raw(), &reference);
        eprintln!("{pix_fmt}: max {max}, mean {mean:.4} vs ffmpeg");
        assert!(max <= 1 && mean < 0.1, "{pix_fmt}: max {max}, mean {mean}");
    }
}

/// Different JPEG decoders (libjpeg-turbo with fancy upsampling vs libavcodec + swscale)
/// differ in IDCT rounding and chroma upsampling: measured max 24, mean 0.77 on test1.jpg.
#[test]
fn mjpeg_decode_is_close_to_ffmpeg() {
    let Some(jpg) = lookout::fixtures::require("images/udacity/test1.jpg") else {
        return;
    };
    let ours = mjpeg_to_rgb(&std::fs::read(&jpg).unwrap()).unwrap();
    let reference = ffmpeg_rgb(&["-i", jpg.to_str().unwrap()]);
    let (max, mean) = differences(ours.as_raw(), &reference);
    eprintln!("mjpeg: max {max}, mean {mean:.4} vs ffmpeg");
    assert!(mean < 2.0, "mean {mean}, max {max}");
}

#[test]
fn camera_without_a_device_says_what_to_use_instead() {
    if Path::new("/dev/video0").exists() {
        eprintln!("skipping: this machine has /dev/video0");
        return;
    }
    let spec = SourceSpec::parse("camera:0", &SourceOptions::default()).unwrap();
    let err = source::open(&spec).err().unwrap().to_string();
    assert!(err.starts_with("no camera found: "), "{err}");
    assert!(err.contains("use --source FILE|DRIVE"), "{err}");
    assert!(source::list_cameras().is_ok());
}
