//! Finding weights for `--model NAME`, locally first.
//!
//! Order: `models/` (in the working directory), `$LOOKOUT_MODELS`, the Hugging Face
//! cache (`$HF_HOME`, default `~/.cache/huggingface`), lookout's own download cache
//! (`$XDG_CACHE_HOME/lookout/models`, default `~/.cache/lookout/models`); then, unless
//! offline (`--offline` / `LOOKOUT_OFFLINE=1`), a download: YOLOv8 through `hf-hub` from
//! `lmz/candle-yolo-v8` (`HF_ENDPOINT` is honoured), YOLOX from Megvii's GitHub release,
//! YOLO11 and YOLO26 from ultralytics' assets releases (`LOOKOUT_YOLOX_URL` replaces
//! Megvii's release URL, `LOOKOUT_ULTRALYTICS_URL` the `releases/download` root under which
//! each tag is a folder: a mirror).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::detect::error::{DetectError, Result};

/// Where a known model's weights come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelSource {
    /// A file of a Hugging Face repository.
    HuggingFace { repo: &'static str },
    /// `{base}/{dir}/{file}` (GitHub release assets; `dir` the release tag, or empty);
    /// `env` names the variable that replaces `base` (a mirror).
    Url {
        base: &'static str,
        dir: &'static str,
        env: &'static str,
    },
}

/// One model `--model` knows by name.
#[derive(Debug, Clone, Copy)]
pub struct KnownModel {
    pub name: &'static str,
    /// File name at the source, and the first name looked for locally.
    pub file: &'static str,
    /// Other local file names accepted for it (converted copies).
    pub aliases: &'static [&'static str],
    pub source: ModelSource,
    pub licence: &'static str,
    pub input_size: usize,
}

const CANDLE_YOLOV8: ModelSource = ModelSource::HuggingFace {
    repo: "lmz/candle-yolo-v8",
};
const MEGVII_RELEASE: ModelSource = ModelSource::Url {
    base: "https://github.com/Megvii-BaseDetection/YOLOX/releases/download/0.1.1rc0",
    dir: "",
    env: "LOOKOUT_YOLOX_URL",
};
/// YOLO11 was released with ultralytics 8.3.0, YOLO26 with 8.4.0.
const ULTRALYTICS_V8_3: ModelSource = ModelSource::Url {
    base: "https://github.com/ultralytics/assets/releases/download",
    dir: "v8.3.0",
    env: "LOOKOUT_ULTRALYTICS_URL",
};
const ULTRALYTICS_V8_4: ModelSource = ModelSource::Url {
    base: "https://github.com/ultralytics/assets/releases/download",
    dir: "v8.4.0",
    env: "LOOKOUT_ULTRALYTICS_URL",
};

macro_rules! ultralytics {
    ($name:literal, $pt:literal, $st:literal, $source:expr) => {
        KnownModel {
            name: $name,
            file: $pt,
            aliases: &[$st],
            source: $source,
            licence: "AGPL-3.0 (ultralytics)",
            input_size: 640,
        }
    };
}

macro_rules! yolov8 {
    ($name:literal, $file:literal, $pt:literal) => {
        KnownModel {
            name: $name,
            file: $file,
            aliases: &[$pt],
            source: CANDLE_YOLOV8,
            licence: "AGPL-3.0 (ultralytics)",
            input_size: 640,
        }
    };
}

macro_rules! yolox {
    ($name:literal, $file:literal, $st:literal, $size:literal) => {
        KnownModel {
            name: $name,
            file: $file,
            aliases: &[$st],
            source: MEGVII_RELEASE,
            licence: "Apache-2.0 (Megvii)",
            input_size: $size,
        }
    };
}

/// Every model `--model` accepts; `models/README.md` lists the same.
pub const KNOWN_MODELS: &[KnownModel] = &[
    yolov8!("yolov8n", "yolov8n.safetensors", "yolov8n.pt"),
    yolov8!("yolov8s", "yolov8s.safetensors", "yolov8s.pt"),
    yolov8!("yolov8m", "yolov8m.safetensors", "yolov8m.pt"),
    yolov8!("yolov8l", "yolov8l.safetensors", "yolov8l.pt"),
    yolov8!("yolov8x", "yolov8x.safetensors", "yolov8x.pt"),
    yolox!(
        "yolox-nano",
        "yolox_nano.pth",
        "yolox_nano.safetensors",
        416
    ),
    yolox!(
        "yolox-tiny",
        "yolox_tiny.pth",
        "yolox_tiny.safetensors",
        416
    ),
    yolox!("yolox-s", "yolox_s.pth", "yolox_s.safetensors", 640),
    yolox!("yolox-m", "yolox_m.pth", "yolox_m.safetensors", 640),
    yolox!("yolox-l", "yolox_l.pth", "yolox_l.safetensors", 640),
    yolox!("yolox-x", "yolox_x.pth", "yolox_x.safetensors", 640),
    ultralytics!(
        "yolo11n",
        "yolo11n.pt",
        "yolo11n.safetensors",
        ULTRALYTICS_V8_3
    ),
    ultralytics!(
        "yolo11s",
        "yolo11s.pt",
        "yolo11s.safetensors",
        ULTRALYTICS_V8_3
    ),
    ultralytics!(
        "yolo11m",
        "yolo11m.pt",
        "yolo11m.safetensors",
        ULTRALYTICS_V8_3
    ),
    ultralytics!(
        "yolo11l",
        "yolo11l.pt",
        "yolo11l.safetensors",
        ULTRALYTICS_V8_3
    ),
    ultralytics!(
        "yolo11x",
        "yolo11x.pt",
        "yolo11x.safetensors",
        ULTRALYTICS_V8_3
    ),
    ultralytics!(
        "yolo26n",
        "yolo26n.pt",
        "yolo26n.safetensors",
        ULTRALYTICS_V8_4
    ),
    ultralytics!(
        "yolo26s",
        "yolo26s.pt",
        "yolo26s.safetensors",
        ULTRALYTICS_V8_4
    ),
    ultralytics!(
        "yolo26m",
        "yolo26m.pt",
        "yolo26m.safetensors",
        ULTRALYTICS_V8_4
    ),
    ultralytics!(
        "yolo26l",
        "yolo26l.pt",
        "yolo26l.safetensors",
        ULTRALYTICS_V8_4
    ),
    ultralytics!(
        "yolo26x",
        "yolo26x.pt",
        "yolo26x.safetensors",
        ULTRALYTICS_V8_4
    ),
];

/// The model lookout uses when none is named: Apache-2.0, real time on a laptop CPU.
pub const DEFAULT_MODEL: &str = "yolox-nano";

pub fn known_model(name: &str) -> Result<&'static KnownModel> {
    let wanted = name.to_ascii_lowercase().replace('_', "-");
    KNOWN_MODELS
        .iter()
        .find(|m| m.name == wanted)
        .ok_or_else(|| DetectError::UnknownModel {
            name: name.to_string(),
            known: KNOWN_MODELS
                .iter()
                .map(|m| m.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Where to look and whether the network may be used.
#[derive(Debug, Clone)]
pub struct Resolver {
    pub search_dirs: Vec<PathBuf>,
    pub hf_cache: hf_hub::Cache,
    pub download_dir: PathBuf,
    pub offline: bool,
}

impl Resolver {
    /// The standard search path from the environment.
    pub fn from_env(offline: bool) -> Self {
        let mut search_dirs = vec![PathBuf::from("models")];
        if let Some(dir) = std::env::var_os("LOOKOUT_MODELS") {
            search_dirs.push(PathBuf::from(dir));
        }
        let offline =
            offline || std::env::var("LOOKOUT_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0");
        Self {
            search_dirs,
            hf_cache: hf_hub::Cache::from_env(),
            download_dir: default_download_dir(),
            offline,
        }
    }

    /// The local file for `name`, downloading it when allowed.
    pub fn resolve(&self, name: &str) -> Result<PathBuf> {
        let model = known_model(name)?;
        if let Some(found) = self.find_local(model) {
            return Ok(found);
        }
        if self.offline {
            return Err(DetectError::NotAvailableOffline {
                name: model.name.to_string(),
            });
        }
        self.download(model)
    }

    fn find_local(&self, model: &KnownModel) -> Option<PathBuf> {
        let files = std::iter::once(model.file).chain(model.aliases.iter().copied());
        for file in files {
            for dir in self.search_dirs.iter().chain([&self.download_dir]) {
                let candidate = dir.join(file);
                if candidate.is_file() {
                    return Some(candidate);
                }
            }
        }
        if let ModelSource::HuggingFace { repo } = model.source {
            return self.hf_cache.model(repo.to_string()).get(model.file);
        }
        None
    }

    fn download(&self, model: &KnownModel) -> Result<PathBuf> {
        let fail = |reason: String| DetectError::Download {
            name: model.name.to_string(),
            reason,
        };
        match model.source {
            ModelSource::HuggingFace { repo } => {
                let api = hf_hub::api::sync::ApiBuilder::from_env()
                    .with_cache_dir(self.hf_cache.path().clone())
                    .with_progress(true)
                    .build()
                    .map_err(|e| fail(e.to_string()))?;
                api.model(repo.to_string())
                    .get(model.file)
                    .map_err(|e| fail(format!("{repo}/{}: {e}", model.file)))
            }
            ModelSource::Url { base, dir, env } => {
                let base = std::env::var(env).unwrap_or_else(|_| base.to_string());
                let base = base.trim_end_matches('/');
                let url = if dir.is_empty() {
                    format!("{base}/{}", model.file)
                } else {
                    format!("{base}/{dir}/{}", model.file)
                };
                download_to(&url, &self.download_dir.join(model.file)).map_err(fail)
            }
        }
    }
}

fn default_download_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("lookout").join("models")
}

/// Downloads `url` to `dest` through a temporary file, so an interrupted download never
/// leaves a truncated model where the next run would find it.
pub fn download_to(url: &str, dest: &Path) -> std::result::Result<PathBuf, String> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let response = ureq::get(url)
        .call()
        .map_err(|e| format!("GET {url}: {e}"))?;
    let total: Option<u64> = response
        .header("content-length")
        .and_then(|v| v.parse().ok());
    let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(format!("downloading {}", dest.display()));
    let tmp = dest.with_extension("part");
    let write_err = |e: std::io::Error| format!("writing {}: {e}", tmp.display());
    let mut file = std::fs::File::create(&tmp).map_err(write_err)?;
    let mut reader = response.into_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut received = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| format!("reading {url}: {e}"))?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n]).map_err(write_err)?;
        received += n as u64;
        bar.set_position(received);
    }
    file.sync_all().map_err(write_err)?;
    bar.finish_and_clear();
    if let Some(total) = total {
        if received != total {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!(
                "{url}: connection closed after {received} of {total} bytes"
            ));
        }
    }
    std::fs::rename(&tmp, dest)
        .map_err(|e| format!("cannot move download to {}: {e}", dest.display()))?;
    Ok(dest.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_names_resolve_and_unknown_names_list_the_known() {
        assert_eq!(known_model("YOLOX_NANO").unwrap().input_size, 416);
        assert_eq!(known_model("yolov8s").unwrap().file, "yolov8s.safetensors");
        let err = known_model("yolov9").unwrap_err().to_string();
        assert!(
            err.contains("yolov9") && err.contains("yolox-nano"),
            "{err}"
        );
    }

    fn offline_resolver(dir: &Path) -> Resolver {
        Resolver {
            search_dirs: vec![dir.join("models")],
            hf_cache: hf_hub::Cache::new(dir.join("hf")),
            download_dir: dir.join("dl"),
            offline: true,
        }
    }

    #[test]
    fn offline_and_absent_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = offline_resolver(dir.path())
            .resolve("yolov8n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("yolov8n") && err.contains("--weights"),
            "{err}"
        );
    }

    #[test]
    fn local_copies_are_found_before_any_download() {
        let dir = tempfile::tempdir().unwrap();
        let r = offline_resolver(dir.path());
        std::fs::create_dir_all(dir.path().join("models")).unwrap();
        std::fs::write(dir.path().join("models/yolox_nano.safetensors"), b"x").unwrap();
        assert_eq!(
            r.resolve("yolox-nano").unwrap(),
            dir.path().join("models/yolox_nano.safetensors")
        );
        // The Hugging Face cache layout: models--ORG--NAME/{refs/main, snapshots/REV/FILE}.
        let repo = dir.path().join("hf/models--lmz--candle-yolo-v8");
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots/abc123")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123").unwrap();
        std::fs::write(repo.join("snapshots/abc123/yolov8m.safetensors"), b"x").unwrap();
        assert_eq!(
            r.resolve("yolov8m").unwrap(),
            repo.join("snapshots/abc123/yolov8m.safetensors")
        );
    }
}
