//! Tensor naming schemes and the one table that translates between them.
//!
//! YOLOv8 weights come named two ways: ultralytics' own (`model.N.*`, C2f bottlenecks
//! `m.K`) and candle-examples' (`net.b1.0.*`, `fpn.n1.*`, `head.*`, bottlenecks
//! `bottleneck.K`; the `lmz/candle-yolo-v8` files). Models here are written against the
//! candle names, so ultralytics names are translated through [`ULTRALYTICS_TO_CANDLE`].

/// How the tensors of a weights file are named, detected from the names themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameScheme {
    /// candle-examples YOLOv8 (`net.*`, `fpn.*`, `head.*`).
    CandleYolov8,
    /// ultralytics YOLOv8 (`model.N.*`).
    UltralyticsYolov8,
    /// Megvii YOLOX (`backbone.backbone.*`, `backbone.C3_*`, `head.*`).
    Yolox,
}

impl NameScheme {
    /// Detects the scheme from tensor names; `None` when no known model is recognised.
    pub fn detect<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<NameScheme> {
        let mut scheme = None;
        for name in names {
            if name.starts_with("backbone.backbone.") {
                return Some(NameScheme::Yolox);
            }
            if name.starts_with("net.b1.") {
                scheme = Some(NameScheme::CandleYolov8);
            } else if name.starts_with("model.0.") && scheme.is_none() {
                scheme = Some(NameScheme::UltralyticsYolov8);
            }
        }
        scheme
    }

    pub fn describe(&self) -> &'static str {
        match self {
            NameScheme::CandleYolov8 => "YOLOv8, candle names (net.*/fpn.*/head.*)",
            NameScheme::UltralyticsYolov8 => "YOLOv8, ultralytics names (model.N.*)",
            NameScheme::Yolox => "YOLOX, Megvii names (backbone.*/head.*)",
        }
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

    #[test]
    fn detects_each_scheme() {
        assert_eq!(
            NameScheme::detect(["model.0.conv.weight", "model.22.dfl.conv.weight"]),
            Some(NameScheme::UltralyticsYolov8)
        );
        assert_eq!(
            NameScheme::detect(["net.b1.0.conv.weight"]),
            Some(NameScheme::CandleYolov8)
        );
        assert_eq!(
            NameScheme::detect(["backbone.backbone.stem.conv.conv.weight"]),
            Some(NameScheme::Yolox)
        );
        assert_eq!(NameScheme::detect(["encoder.layer.0.weight"]), None);
    }
}
