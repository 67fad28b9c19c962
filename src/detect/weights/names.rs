//! Tensor naming schemes and the one table that translates between them.
//!
//! YOLOv8 weights come named two ways: ultralytics' own (`model.N.*`, C2f bottlenecks
//! `m.K`) and candle-examples' (`net.b1.0.*`, `fpn.n1.*`, `head.*`, bottlenecks
//! `bottleneck.K`; the `lmz/candle-yolo-v8` files). Models here are written against the
//! candle names, so ultralytics names are translated through [`ULTRALYTICS_TO_CANDLE`].

/// How the tensors of a weights file are named, detected from the names themselves; each
/// scheme is one family's (YOLOv8 has two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameScheme {
    /// candle-examples YOLOv8 (`net.*`, `fpn.*`, `head.*`).
    CandleYolov8,
    /// ultralytics YOLOv8 (`model.N.*`, the detect head at layer 22).
    UltralyticsYolov8,
    /// ultralytics YOLO11 (`model.N.*`: C2PSA at layer 10, the DFL detect head at 23).
    Yolo11,
    /// ultralytics YOLO26 (`model.N.*`: C2PSA at layer 10, the end-to-end head at 23 with
    /// its one-to-one branch `one2one_cv2`/`one2one_cv3`, no DFL).
    Yolo26,
    /// Megvii YOLOX (`backbone.backbone.*`, `backbone.C3_*`, `head.*`).
    Yolox,
}

/// Why no scheme applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unrecognised {
    /// No tensor has a name of a known model.
    NoModel,
    /// A model lookout recognises but does not run: what it is.
    Unsupported(String),
}

/// What lookout runs, for the errors.
pub const SUPPORTED: &str = "detection checkpoints of YOLOv8, YOLO11 and YOLO26 (ultralytics `.pt` or safetensors) and YOLOX (Megvii)";

impl NameScheme {
    /// Detects the scheme from tensor names (and, for ultralytics heads, the width of a
    /// branch: `width(name)` gives a tensor's first dimension).
    pub fn detect<'a>(
        names: impl IntoIterator<Item = &'a str>,
        width: impl Fn(&str) -> Option<usize>,
    ) -> Result<NameScheme, Unrecognised> {
        let names: Vec<&str> = names.into_iter().collect();
        let has = |part: &str| names.iter().any(|n| n.contains(part));
        if names.iter().any(|n| n.starts_with("backbone.backbone.")) {
            return Ok(NameScheme::Yolox);
        }
        if names.iter().any(|n| n.starts_with("net.b1.")) {
            return Ok(NameScheme::CandleYolov8);
        }
        if !names.iter().any(|n| n.starts_with("model.0.")) {
            return Err(Unrecognised::NoModel);
        }
        ultralytics_scheme(&names, &has, &width)
    }

    pub fn describe(&self) -> &'static str {
        match self {
            NameScheme::CandleYolov8 => "YOLOv8, candle names (net.*/fpn.*/head.*)",
            NameScheme::UltralyticsYolov8 => "YOLOv8, ultralytics names (model.N.*)",
            NameScheme::Yolo11 => "YOLO11, ultralytics names (model.N.*)",
            NameScheme::Yolo26 => "YOLO26, ultralytics names (model.N.*)",
            NameScheme::Yolox => "YOLOX, Megvii names (backbone.*/head.*)",
        }
    }
}

/// The layer index of `model.N.{rest}` names containing `part`.
fn layer_with(names: &[&str], part: &str) -> Option<usize> {
    names.iter().find(|n| n.contains(part)).and_then(|n| {
        n.strip_prefix("model.")?
            .split_once('.')
            .and_then(|(i, _)| i.parse().ok())
    })
}

/// An ultralytics checkpoint (`model.N.*`): which architecture and task. Detection heads
/// are told apart by what their tensors hold: segmentation has mask prototypes (`proto`),
/// pose and oriented boxes an extra branch `cv4` (keypoints, or one angle), classification
/// a `linear` layer, YOLO-World a contrastive `cv4` without a third conv; YOLO26 has the
/// one-to-one branch and no DFL (a fused one has only that branch), YOLOv10 the one-to-one
/// branch with DFL; YOLO11 and YOLO26 have C2PSA attention (at layer 10 in detection
/// models); YOLOv9 has ELAN blocks (`cv4`, SPPELAN's `cv5`), YOLOv8 C2f blocks.
fn ultralytics_scheme(
    names: &[&str],
    has: &dyn Fn(&str) -> bool,
    width: &dyn Fn(&str) -> Option<usize>,
) -> Result<NameScheme, Unrecognised> {
    let attention = has(".m.0.attn.qkv.");
    let c2psa_at_10 = names
        .iter()
        .any(|n| n.starts_with("model.10.m.0.attn.qkv."));
    let elan = names
        .iter()
        .any(|n| n.ends_with(".cv4.conv.weight") || n.ends_with(".cv5.conv.weight"));
    let one2one = has(".one2one_cv2.");
    let dfl = has(".dfl.conv.weight");
    let detect_head = has(".cv2.0.2.weight") || one2one;
    let base = match (attention, one2one, dfl) {
        (_, true, true) => "YOLOv10",
        // Without a box head (classification) the DFL cannot tell them apart.
        (true, _, false) if !detect_head => "YOLO11/YOLO26",
        (true, _, false) => "YOLO26",
        (true, _, true) => "YOLO11",
        _ if elan => "YOLOv9",
        _ => "YOLOv8",
    };
    let unsupported = |what: String| Err(Unrecognised::Unsupported(what));
    if has(".proto.") {
        return unsupported(format!(
            "a {base} segmentation checkpoint (a Segment head with mask prototypes)"
        ));
    }
    if let Some(layer) = layer_with(names, ".cv4.0.") {
        let branch = names
            .iter()
            .find(|n| n.starts_with(&format!("model.{layer}.cv4.0.2.")) && n.ends_with("weight"))
            .and_then(|n| width(n));
        let task = match branch {
            Some(1) => "oriented-box (OBB) checkpoint (a head with an angle branch `cv4`)",
            Some(_) => "pose checkpoint (a head with a keypoint branch `cv4`)",
            None => "open-vocabulary (YOLO-World/YOLOE) checkpoint (a head with a contrastive branch `cv4`)",
        };
        return unsupported(format!("a {base} {task}"));
    }
    if has(".linear.weight") {
        return unsupported(format!(
            "a {base} classification checkpoint (a Classify head, no boxes)"
        ));
    }
    if base == "YOLOv10" {
        return unsupported(
            "a YOLOv10 checkpoint (one-to-one head with DFL and C2fCIB blocks)".into(),
        );
    }
    if base == "YOLOv9" {
        return unsupported(
            "a YOLOv9 checkpoint (GELAN: RepNCSPELAN4/ELAN1 blocks, SPPELAN)".into(),
        );
    }
    // A fused end-to-end head keeps only its one-to-one branch.
    let head = layer_with(names, ".cv2.0.2.weight")
        .or_else(|| layer_with(names, ".one2one_cv2.0.2.weight"));
    let c2f = names.iter().any(|n| n.starts_with("model.2.m.0.cv1."))
        && !names.iter().any(|n| n.starts_with("model.2.cv3."));
    match (base, head) {
        ("YOLO26" | "YOLO11", Some(23)) if !c2psa_at_10 => unsupported(format!(
            "an ultralytics architecture lookout does not know (a {base}-like model without C2PSA at layer 10)"
        )),
        ("YOLO26", Some(23)) if one2one => Ok(NameScheme::Yolo26),
        ("YOLO26", Some(23)) => unsupported(
            "a YOLO26 checkpoint without its one-to-one head (`model.23.one2one_cv2`/`one2one_cv3`): ultralytics predicts with that head, and so does lookout; export the model from its training checkpoint (`best.pt`)".into(),
        ),
        ("YOLO11", Some(23)) => Ok(NameScheme::Yolo11),
        (_, Some(22)) if !attention && dfl && c2f => Ok(NameScheme::UltralyticsYolov8),
        (_, Some(layer)) => unsupported(format!(
            "an ultralytics architecture lookout does not know (a {base} detect head at layer {layer}; YOLOv8 has it at 22, YOLO11 and YOLO26 at 23)"
        )),
        (_, None) => unsupported(
            "an ultralytics checkpoint without a detect head (no `model.N.cv2.0.2.weight`)".into(),
        ),
    }
}

/// ultralytics `model.N` layer index → candle-examples module path, for yolov8.yaml.
/// Layers 10, 11, 13, 14, 17, 20 (upsample, concat) have no weights.
pub const ULTRALYTICS_TO_CANDLE: &[(usize, &str)] = &[
    (0, "net.b1.0"),
    (1, "net.b1.1"),
    (2, "net.b2.0"),
    (3, "net.b2.1"),
    (4, "net.b2.2"),
    (5, "net.b3.0"),
    (6, "net.b3.1"),
    (7, "net.b4.0"),
    (8, "net.b4.1"),
    (9, "net.b5.0"),
    (12, "fpn.n1"),
    (15, "fpn.n2"),
    (16, "fpn.n3"),
    (18, "fpn.n4"),
    (19, "fpn.n5"),
    (21, "fpn.n6"),
    (22, "head"),
];

/// Inside a C2f block ultralytics calls the bottleneck list `m`, candle `bottleneck`.
const C2F_BOTTLENECKS: (&str, &str) = ("m.", "bottleneck.");

/// Translates an ultralytics tensor name to its candle-examples name; `None` for a name
/// outside the YOLOv8 layout (such a tensor is not used by the model).
pub fn ultralytics_to_candle(name: &str) -> Option<String> {
    let rest = name.strip_prefix("model.")?;
    let (index, within) = rest.split_once('.')?;
    let index: usize = index.parse().ok()?;
    let (_, module) = ULTRALYTICS_TO_CANDLE.iter().find(|(i, _)| *i == index)?;
    let within = match within.strip_prefix(C2F_BOTTLENECKS.0) {
        Some(tail) => format!("{}{tail}", C2F_BOTTLENECKS.1),
        None => within.to_string(),
    };
    Some(format!("{module}.{within}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translates_backbone_neck_head_and_bottlenecks() {
        let cases = [
            ("model.0.conv.weight", "net.b1.0.conv.weight"),
            (
                "model.2.m.0.cv1.conv.weight",
                "net.b2.0.bottleneck.0.cv1.conv.weight",
            ),
            ("model.9.cv2.bn.running_var", "net.b5.0.cv2.bn.running_var"),
            ("model.21.cv1.conv.weight", "fpn.n6.cv1.conv.weight"),
            ("model.22.cv3.2.2.bias", "head.cv3.2.2.bias"),
            ("model.22.dfl.conv.weight", "head.dfl.conv.weight"),
        ];
        for (ultralytics, candle) in cases {
            assert_eq!(ultralytics_to_candle(ultralytics).as_deref(), Some(candle));
        }
    }

    #[test]
    fn layers_without_weights_and_foreign_names_do_not_translate() {
        assert_eq!(ultralytics_to_candle("model.10.weight"), None);
        assert_eq!(ultralytics_to_candle("backbone.stem.conv.weight"), None);
        assert_eq!(ultralytics_to_candle("model.x.conv.weight"), None);
    }

    /// With pose's keypoint branch (17 keypoints × 3) as `cv4`'s width.
    fn detect(names: &[&str]) -> Result<NameScheme, Unrecognised> {
        detect_with_cv4(names, 51)
    }

    fn detect_with_cv4(names: &[&str], cv4: usize) -> Result<NameScheme, Unrecognised> {
        NameScheme::detect(names.iter().copied(), |n| {
            n.contains(".cv4.0.2.").then_some(cv4)
        })
    }

    fn unsupported(names: &[&str]) -> String {
        unsupported_with_cv4(names, 51)
    }

    fn unsupported_with_cv4(names: &[&str], cv4: usize) -> String {
        match detect_with_cv4(names, cv4) {
            Err(Unrecognised::Unsupported(what)) => what,
            other => panic!("{names:?}: {other:?}"),
        }
    }

    #[test]
    fn detects_each_scheme() {
        let v8 = [
            "model.0.conv.weight",
            "model.2.m.0.cv1.conv.weight",
            "model.22.cv2.0.2.weight",
            "model.22.dfl.conv.weight",
        ];
        assert_eq!(detect(&v8), Ok(NameScheme::UltralyticsYolov8));
        let v11 = [
            "model.0.conv.weight",
            "model.10.m.0.attn.qkv.conv.weight",
            "model.23.cv2.0.2.weight",
            "model.23.dfl.conv.weight",
        ];
        assert_eq!(detect(&v11), Ok(NameScheme::Yolo11));
        let v26 = [
            "model.0.conv.weight",
            "model.10.m.0.attn.qkv.conv.weight",
            "model.23.cv2.0.2.weight",
            "model.23.one2one_cv2.0.2.weight",
        ];
        assert_eq!(detect(&v26), Ok(NameScheme::Yolo26));
        // Fused (`Detect.fuse()`): the one-to-many branch dropped.
        let fused = [v26[0], v26[1], v26[3]];
        assert_eq!(detect(&fused), Ok(NameScheme::Yolo26));
        assert_eq!(
            detect(&["net.b1.0.conv.weight"]),
            Ok(NameScheme::CandleYolov8)
        );
        assert_eq!(
            detect(&["backbone.backbone.stem.conv.conv.weight"]),
            Ok(NameScheme::Yolox)
        );
        assert_eq!(
            detect(&["encoder.layer.0.weight"]),
            Err(Unrecognised::NoModel)
        );
    }

    /// Other ultralytics tasks and architectures are named, not mistaken for YOLOv8.
    #[test]
    fn names_unsupported_tasks_and_architectures() {
        let seg = unsupported(&[
            "model.0.conv.weight",
            "model.10.m.0.attn.qkv.conv.weight",
            "model.23.proto.cv1.conv.weight",
            "model.23.dfl.conv.weight",
        ]);
        assert!(seg.contains("YOLO11 segmentation"), "{seg}");
        let pose = unsupported(&[
            "model.0.conv.weight",
            "model.22.cv4.0.2.weight",
            "model.22.dfl.conv.weight",
        ]);
        assert!(pose.contains("pose"), "{pose}");
        let obb = unsupported_with_cv4(&["model.0.conv.weight", "model.22.cv4.0.2.weight"], 1);
        assert!(obb.contains("oriented-box"), "{obb}");
        let cls = unsupported(&["model.0.conv.weight", "model.9.linear.weight"]);
        assert!(cls.contains("classification"), "{cls}");
        let v10 = unsupported(&[
            "model.0.conv.weight",
            "model.23.one2one_cv2.0.2.weight",
            "model.23.dfl.conv.weight",
        ]);
        assert!(v10.contains("YOLOv10"), "{v10}");
        let no_one2one = unsupported(&[
            "model.0.conv.weight",
            "model.10.m.0.attn.qkv.conv.weight",
            "model.23.cv2.0.2.weight",
        ]);
        assert!(
            no_one2one.contains("without its one-to-one head"),
            "{no_one2one}"
        );
        let v9 = unsupported(&[
            "model.0.conv.weight",
            "model.2.cv4.conv.weight",
            "model.9.cv5.conv.weight",
            "model.22.cv2.0.2.weight",
            "model.22.dfl.conv.weight",
        ]);
        assert!(v9.contains("YOLOv9"), "{v9}");
        let world = unsupported(&[
            "model.0.conv.weight",
            "model.22.cv4.0.bias",
            "model.22.dfl.conv.weight",
        ]);
        assert!(world.contains("open-vocabulary"), "{world}");
        let cls11 = unsupported(&[
            "model.0.conv.weight",
            "model.9.m.0.attn.qkv.conv.weight",
            "model.10.linear.weight",
        ]);
        assert!(cls11.contains("YOLO11/YOLO26 classification"), "{cls11}");
        let other = unsupported(&[
            "model.0.conv.weight",
            "model.28.cv2.0.2.weight",
            "model.28.dfl.conv.weight",
        ]);
        assert!(other.contains("layer 28"), "{other}");
    }
}
