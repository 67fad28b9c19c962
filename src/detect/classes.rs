//! Class names, their road-user groups, and the `--classes` filter.
//!
//! COCO-80 is the default. A model trained on other classes names them in its
//! safetensors metadata (`names`: a JSON list, or an ultralytics-style `{"0": "car"}`
//! map), in its ultralytics `.pt` checkpoint (`model.names`, which the weights reader
//! passes on as metadata `names`) or in a sidecar file beside the weights,
//! `<weights stem>.names`: one class name per line in class-id order, blank lines and `#`
//! comments ignored.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::types::ClassGroup;

/// COCO-80 names, in the order both Megvii YOLOX and ultralytics use.
pub const COCO80: [&str; 80] = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

/// The group of a class, by name (so custom models with road-user names group too).
pub fn group_of(class_name: &str) -> ClassGroup {
    match class_name.to_ascii_lowercase().as_str() {
        "person" | "pedestrian" | "people" | "person_sitting" => ClassGroup::Pedestrian,
        "bicycle" | "car" | "motorcycle" | "motorbike" | "bus" | "train" | "truck" | "van"
        | "cyclist" | "tram" => ClassGroup::Vehicle,
        "traffic light" | "stop sign" | "traffic sign" | "traffic_light" | "traffic_sign" => {
            ClassGroup::Sign
        }
        _ => ClassGroup::Other,
    }
}

/// The class names of one model, with their groups.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassNames {
    /// Shared with every detection of the class (a reference count per detection, no copy).
    names: Vec<Arc<str>>,
    groups: Vec<ClassGroup>,
}

impl ClassNames {
    pub fn new(names: Vec<String>) -> Self {
        let groups = names.iter().map(|n| group_of(n)).collect();
        let names = names.into_iter().map(Arc::from).collect();
        Self { names, groups }
    }

    pub fn coco80() -> Self {
        Self::new(COCO80.iter().map(|s| s.to_string()).collect())
    }

    /// Names for a model with `num_classes` outputs whose weights are at `weights_path`:
    /// metadata `names`, else the `.names` sidecar, else COCO-80 when the count is 80.
    /// [Placeholder](are_placeholders) metadata names come last: after the sidecar and
    /// COCO-80, before an error.
    pub fn for_model(
        num_classes: usize,
        weights_path: &Path,
        metadata: &HashMap<String, String>,
    ) -> Result<Self, String> {
        let given = match metadata.get("names") {
            Some(raw) => Some(
                parse_metadata_names(raw)
                    .map_err(|e| format!("metadata `names` of {}: {e}", weights_path.display()))?,
            ),
            None => None,
        };
        let (given, placeholders) = match given {
            Some(names) if are_placeholders(&names) => (None, Some(names)),
            other => (other, None),
        };
        let names = if let Some(names) = given {
            names
        } else {
            let sidecar = weights_path.with_extension("names");
            if sidecar.is_file() {
                let text = std::fs::read_to_string(&sidecar)
                    .map_err(|e| format!("cannot read {}: {e}", sidecar.display()))?;
                parse_sidecar(&text)
            } else if num_classes == 80 {
                return Ok(Self::coco80());
            } else if let Some(names) = placeholders {
                names
            } else {
                return Err(format!(
                    "the model has {num_classes} classes but no names: add a `names` entry to the safetensors metadata or a file {} with one name per line",
                    sidecar.display()
                ));
            }
        };
        if names.len() != num_classes {
            return Err(format!(
                "{} names the model's classes with {} names but the model has {num_classes} classes",
                weights_path.display(),
                names.len()
            ));
        }
        Ok(Self::new(names))
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn name(&self, class_id: usize) -> &str {
        self.names.get(class_id).map_or("?", |n| n)
    }

    /// The name as detections hold it (shared, not copied).
    pub fn shared_name(&self, class_id: usize) -> Arc<str> {
        match self.names.get(class_id) {
            Some(n) => n.clone(),
            None => Arc::from("?"),
        }
    }

    pub fn group(&self, class_id: usize) -> ClassGroup {
        self.groups
            .get(class_id)
            .copied()
            .unwrap_or(ClassGroup::Other)
    }

    fn id_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n.eq_ignore_ascii_case(name))
    }
}

/// Whether `names` are ultralytics' placeholders, every class named by its id (`"0"`,
/// `"1"`, …: a model built from a yaml and never trained on a dataset), or empty: they
/// name nothing, so the defaults apply as if there were none.
pub fn are_placeholders(names: &[String]) -> bool {
    names
        .iter()
        .enumerate()
        .all(|(i, name)| *name == i.to_string())
}

fn parse_metadata_names(raw: &str) -> Result<Vec<String>, String> {
    let value: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| format!("not JSON ({e})"))?;
    match value {
        serde_json::Value::Array(items) => items
            .into_iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or("a list entry is not a string".into())
            })
            .collect(),
        serde_json::Value::Object(map) => {
            let mut pairs = map
                .into_iter()
                .map(|(k, v)| {
                    let id: usize = k
                        .parse()
                        .map_err(|_| format!("key `{k}` is not a class id"))?;
                    let name = v
                        .as_str()
                        .ok_or(format!("name of class {k} is not a string"))?;
                    Ok((id, name.to_string()))
                })
                .collect::<Result<Vec<_>, String>>()?;
            pairs.sort();
            if pairs.iter().enumerate().any(|(i, (id, _))| i != *id) {
                return Err("class ids are not 0..n without gaps".into());
            }
            Ok(pairs.into_iter().map(|(_, n)| n).collect())
        }
        _ => Err("expected a JSON list or {\"0\": name} map".into()),
    }
}

fn parse_sidecar(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// Which classes are reported: `--classes all`, or a comma list of class names, group
/// names (`pedestrian`, `vehicle`, `sign`, `other`) and class ids.
#[derive(Debug, Clone, PartialEq)]
pub enum ClassFilter {
    All,
    Some {
        groups: Vec<ClassGroup>,
        names: Vec<String>,
        ids: Vec<usize>,
    },
}

impl Default for ClassFilter {
    /// Road users: pedestrians, vehicles and signs.
    fn default() -> Self {
        ClassFilter::Some {
            groups: vec![
                ClassGroup::Pedestrian,
                ClassGroup::Vehicle,
                ClassGroup::Sign,
            ],
            names: vec![],
            ids: vec![],
        }
    }
}

impl ClassFilter {
    pub fn parse(spec: &str) -> Result<ClassFilter, String> {
        let spec = spec.trim();
        if spec.eq_ignore_ascii_case("all") {
            return Ok(ClassFilter::All);
        }
        let (mut groups, mut names, mut ids) = (vec![], vec![], vec![]);
        for item in spec.split(',').map(str::trim) {
            if item.is_empty() {
                return Err(format!("--classes `{spec}` has an empty entry"));
            }
            if let Ok(id) = item.parse::<usize>() {
                ids.push(id);
            } else if let Some(group) = ClassGroup::from_name(&item.to_ascii_lowercase()) {
                groups.push(group);
            } else {
                names.push(item.to_string());
            }
        }
        Ok(ClassFilter::Some { groups, names, ids })
    }

    /// Resolves the filter against a model's classes: one flag per class id. Unknown names
    /// and out-of-range ids are errors, so a typo never silently filters everything out.
    pub fn mask(&self, classes: &ClassNames) -> Result<Vec<bool>, String> {
        match self {
            ClassFilter::All => Ok(vec![true; classes.len()]),
            ClassFilter::Some { groups, names, ids } => {
                let mut mask: Vec<bool> = (0..classes.len())
                    .map(|i| groups.contains(&classes.group(i)))
                    .collect();
                for name in names {
                    let id = classes.id_of(name).ok_or_else(|| {
                        format!("--classes: the model has no class `{name}` (use a class name, a group: pedestrian, vehicle, sign, other, a class id, or `all`)")
                    })?;
                    mask[id] = true;
                }
                for &id in ids {
                    if id >= classes.len() {
                        return Err(format!(
                            "--classes: class id {id} is out of range, the model has {} classes",
                            classes.len()
                        ));
                    }
                    mask[id] = true;
                }
                Ok(mask)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coco_road_users_fall_into_their_groups() {
        let c = ClassNames::coco80();
        assert_eq!(c.group(0), ClassGroup::Pedestrian);
        for id in [1, 2, 3, 5, 6, 7] {
            assert_eq!(c.group(id), ClassGroup::Vehicle, "{}", c.name(id));
        }
        assert_eq!(c.group(9), ClassGroup::Sign);
        assert_eq!(c.group(11), ClassGroup::Sign);
        assert_eq!(c.group(16), ClassGroup::Other);
        assert_eq!(c.name(16), "dog");
    }

    #[test]
    fn default_filter_keeps_road_users_only() {
        let mask = ClassFilter::default().mask(&ClassNames::coco80()).unwrap();
        let kept: Vec<usize> = (0..80).filter(|&i| mask[i]).collect();
        assert_eq!(kept, vec![0, 1, 2, 3, 5, 6, 7, 9, 11]);
    }

    #[test]
    fn filter_mixes_names_groups_and_ids() {
        let f = ClassFilter::parse("sign, dog,27").unwrap();
        let mask = f.mask(&ClassNames::coco80()).unwrap();
        let kept: Vec<usize> = (0..80).filter(|&i| mask[i]).collect();
        assert_eq!(kept, vec![9, 11, 16, 27]);
        assert_eq!(ClassFilter::parse("ALL").unwrap(), ClassFilter::All);
    }

    #[test]
    fn filter_rejects_unknown_names_and_ids() {
        let classes = ClassNames::coco80();
        let err = ClassFilter::parse("pedestrain")
            .unwrap()
            .mask(&classes)
            .unwrap_err();
        assert!(err.contains("pedestrain"), "{err}");
        let err = ClassFilter::parse("80")
            .unwrap()
            .mask(&classes)
            .unwrap_err();
        assert!(err.contains("80"), "{err}");
        assert!(ClassFilter::parse("car,,bus").is_err());
    }

    /// ultralytics names a model built from a yaml `{0: "0", 1: "1", …}`: those name
    /// nothing, so a sidecar or COCO-80 applies as without names (the fixtures' YOLO11 and
    /// YOLO26 files carry them).
    #[test]
    fn placeholder_names_count_as_none() {
        let map: serde_json::Map<String, serde_json::Value> = (0..80)
            .map(|i| (i.to_string(), serde_json::Value::String(i.to_string())))
            .collect();
        let metadata = HashMap::from([(
            "names".to_string(),
            serde_json::Value::Object(map).to_string(),
        )]);
        let names =
            ClassNames::for_model(80, Path::new("/nowhere/m.safetensors"), &metadata).unwrap();
        assert_eq!((names.name(0), names.name(2)), ("person", "car"));
        let digits = HashMap::from([("names".to_string(), r#"["0", "1", "2"]"#.to_string())]);
        let names = ClassNames::for_model(3, Path::new("/nowhere/m.safetensors"), &digits).unwrap();
        assert_eq!(
            names.name(2),
            "2",
            "no sidecar and not 80: the digits are the names"
        );
        let real = HashMap::from([("names".to_string(), r#"["0", "tram"]"#.to_string())]);
        let names = ClassNames::for_model(2, Path::new("/nowhere/m.safetensors"), &real).unwrap();
        assert_eq!(names.name(1), "tram");
    }

    #[test]
    fn names_come_from_metadata_list_or_map_or_sidecar() {
        let path = Path::new("/nonexistent/model.safetensors");
        let mut meta = HashMap::new();
        meta.insert("names".to_string(), r#"["car", "pedestrian"]"#.to_string());
        let c = ClassNames::for_model(2, path, &meta).unwrap();
        assert_eq!(c.group(1), ClassGroup::Pedestrian);
        meta.insert(
            "names".to_string(),
            r#"{"1": "truck", "0": "stop sign"}"#.to_string(),
        );
        let c = ClassNames::for_model(2, path, &meta).unwrap();
        assert_eq!((c.name(0), c.group(0)), ("stop sign", ClassGroup::Sign));
        let err = ClassNames::for_model(3, path, &meta).unwrap_err();
        assert!(err.contains("3 classes"), "{err}");
        let err = ClassNames::for_model(3, path, &HashMap::new()).unwrap_err();
        assert!(err.contains("model.names"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let weights = dir.path().join("signs.safetensors");
        std::fs::write(
            dir.path().join("signs.names"),
            "# my classes\nstop sign\n\nyield\n",
        )
        .unwrap();
        let c = ClassNames::for_model(2, &weights, &HashMap::new()).unwrap();
        assert_eq!(c.name(1), "yield");
    }
}
