//! The labelled images an evaluation predicts: `--eval-set DIR` (`DIR/<Label>/*.jpg`, the label is
//! the directory's name), or by default the golden images of `model/golden.json` (one validation
//! image per label, chosen so the expected prediction is robust), built into deployer. A golden
//! image is its decoded pixels at the model's input size, sent as a BMP, so every server reads
//! exactly those pixels.

use std::path::Path;

use base64::Engine as _;
use serde_json::Value;

use crate::smoke::{bmp, mime_for};

/// The golden fixtures of the committed model (model/README.md, "golden.json").
const GOLDEN: &str = include_str!("../../../../model/golden.json");
/// The image files `--eval-set` takes, by extension.
const EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "webp", "bmp"];

/// One labelled image.
#[derive(Debug, Clone)]
pub struct Labelled {
    /// The true label.
    pub label: String,
    /// Where it comes from (a file name), for messages.
    pub name: String,
    pub bytes: Vec<u8>,
    pub mime: &'static str,
}

/// The images of an evaluation and where they come from.
#[derive(Debug, Clone)]
pub struct EvalSet {
    /// `golden images (model/golden.json)` or the directory.
    pub source: String,
    pub images: Vec<Labelled>,
}

/// `--eval-set DIR`, else the golden images (built in: a unit test reads them, so only a
/// directory can be wrong).
pub fn load(dir: Option<&Path>) -> Result<EvalSet, String> {
    match dir {
        Some(dir) => from_dir(dir),
        None => golden(GOLDEN),
    }
}

/// The golden images of a golden.json document.
pub fn golden(text: &str) -> Result<EvalSet, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("model/golden.json: {e}"))?;
    let images = doc["images"]
        .as_array()
        .ok_or("model/golden.json: no images")?;
    let one = |im: &Value| -> Option<Labelled> {
        let (w, h) = (
            im["decoded_width"].as_u64()?,
            im["decoded_height"].as_u64()?,
        );
        let pixels = base64::engine::general_purpose::STANDARD
            .decode(im["decoded_rgb8_base64"].as_str()?)
            .ok()?;
        let (w, h) = (u32::try_from(w).ok()?, u32::try_from(h).ok()?);
        (pixels.len() == (w * h * 3) as usize).then(|| Labelled {
            label: im["label"].as_str().unwrap_or_default().to_string(),
            name: im["image"].as_str().unwrap_or("golden image").to_string(),
            bytes: bmp(w, h, &pixels),
            mime: "image/bmp",
        })
    };
    let images = images
        .iter()
        .map(|im| {
            one(im).ok_or_else(|| format!("model/golden.json: an unusable image: {}", im["image"]))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EvalSet {
        source: "golden images (model/golden.json)".into(),
        images,
    })
}

/// `DIR/<Label>/*.jpg` (and the other image types), sorted by label and name.
pub fn from_dir(dir: &Path) -> Result<EvalSet, String> {
    let bad = |what: String| format!("--eval-set {}: {what}", dir.display());
    let mut labels: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| bad(e.to_string()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    labels.sort();
    let mut images = Vec::new();
    for label_dir in labels {
        let label = label_dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let mut files: Vec<_> = std::fs::read_dir(&label_dir)
            .map_err(|e| bad(format!("{}: {e}", label_dir.display())))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| is_image(p))
            .collect();
        files.sort();
        for f in files {
            let bytes = std::fs::read(&f).map_err(|e| bad(format!("{}: {e}", f.display())))?;
            images.push(Labelled {
                label: label.clone(),
                name: f.display().to_string(),
                mime: mime_for(&f),
                bytes,
            });
        }
    }
    if images.is_empty() {
        return Err(bad(
            "no labelled images: expected DIR/<Label>/*.jpg (or .jpeg, .png, .webp, .bmp)".into(),
        ));
    }
    Ok(EvalSet {
        source: dir.display().to_string(),
        images,
    })
}

fn is_image(p: &Path) -> bool {
    p.is_file()
        && p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_golden_set_has_one_labelled_image_per_label() {
        let set = load(None).unwrap();
        let mut labels: Vec<&str> = set.images.iter().map(|i| i.label.as_str()).collect();
        labels.dedup();
        assert_eq!(labels.len(), 10, "{labels:?}");
        for i in &set.images {
            assert_eq!(&i.bytes[..2], b"BM");
            assert_eq!(i.mime, "image/bmp");
        }
    }

    #[test]
    fn a_directory_gives_its_subdirectories_as_labels() {
        let dir = tempfile::tempdir().unwrap();
        for (label, file) in [("Mars", "a.jpg"), ("Mars", "b.PNG"), ("Earth", "c.jpeg")] {
            std::fs::create_dir_all(dir.path().join(label)).unwrap();
            std::fs::write(dir.path().join(label).join(file), b"x").unwrap();
        }
        std::fs::write(dir.path().join("Mars/notes.txt"), b"not an image").unwrap();
        let set = from_dir(dir.path()).unwrap();
        let got: Vec<(&str, &str)> = set
            .images
            .iter()
            .map(|i| (i.label.as_str(), i.mime))
            .collect();
        assert_eq!(
            got,
            [
                ("Earth", "image/jpeg"),
                ("Mars", "image/jpeg"),
                ("Mars", "image/png")
            ]
        );
        let empty = tempfile::tempdir().unwrap();
        let e = from_dir(empty.path()).unwrap_err();
        assert!(e.contains("no labelled images"), "{e}");
        assert!(from_dir(&empty.path().join("nope")).is_err());
    }
}
