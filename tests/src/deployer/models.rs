//! Variants of the served model for release tests: another version (a later release of the same
//! model), one whose labels are permuted (a model its server must refuse at start), and the guide's
//! weaker recipe given metadata. Each is an ONNX file with metadata changed in place (keeping every
//! length) or appended, so the protobuf stays valid without a protobuf library.

use std::path::{Path, PathBuf};

use super::Scratch;
use crate::repo_root;

/// The shipped model.
pub fn shipped_model() -> PathBuf {
    repo_root().join("model/celestial-bodies.onnx")
}

/// The value of the metadata entry `key` (`celestial.model_version`) in ONNX bytes, and where it
/// starts: a StringStringEntryProto is `0x0a len key 0x12 len value`.
fn metadata_value(onnx: &[u8], key: &str) -> (usize, String) {
    let mut needle = vec![0x0a, u8::try_from(key.len()).unwrap()];
    needle.extend_from_slice(key.as_bytes());
    needle.push(0x12);
    let at = onnx
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .unwrap_or_else(|| panic!("no metadata entry {key} in the model"));
    let len = usize::from(onnx[at + needle.len()]);
    let start = at + needle.len() + 1;
    let value = String::from_utf8(onnx[start..start + len].to_vec()).unwrap();
    (start, value)
}

/// The model version (`celestial.model_version`) of the ONNX file at `path`.
pub fn model_version(path: &Path) -> String {
    metadata_value(&std::fs::read(path).unwrap(), "celestial.model_version").1
}

/// A copy of `from` in `dir` named `name`, with `edit` applied to its bytes.
fn variant(from: &Path, dir: &Scratch, name: &str, edit: impl Fn(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(from).unwrap();
    edit(&mut bytes);
    let to = dir.path().join(name);
    std::fs::write(&to, bytes).unwrap();
    to
}

/// `from` with its model version's last digit changed (2.0.0 -> 2.0.1): a later release of the same
/// weights. Returns the file and the new version.
pub fn next_version(from: &Path, dir: &Scratch) -> (PathBuf, String) {
    let (start, version) = metadata_value(&std::fs::read(from).unwrap(), "celestial.model_version");
    let last = version.bytes().last().expect("a version");
    assert!(last.is_ascii_digit(), "version {version} ends in a digit");
    let next = if last == b'9' { b'0' } else { last + 1 };
    let path = variant(from, dir, "next-version.onnx", |b| {
        b[start + version.len() - 1] = next;
    });
    let new = model_version(&path);
    assert_ne!(new, version);
    (path, new)
}

/// `from` with two of its labels swapped in `celestial.labels` (Mars and Moon, names of one
/// length): the weights answer in the old order, so its golden images come out wrong.
pub fn permuted_labels(from: &Path, dir: &Scratch) -> PathBuf {
    let (old, new) = (
        b"\"Mars\", \"Mercury\", \"Moon\"".as_slice(),
        b"\"Moon\", \"Mercury\", \"Mars\"".as_slice(),
    );
    variant(from, dir, "permuted-labels.onnx", |b| {
        let at: Vec<usize> = b
            .windows(old.len())
            .enumerate()
            .filter(|(_, w)| *w == old)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(at.len(), 1, "the labels appear once in the model");
        b[at[0]..at[0] + new.len()].copy_from_slice(new);
    })
}

/// A protobuf varint.
fn varint(mut n: usize, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A length-delimited protobuf field: its tag byte, the length and the bytes.
fn field(tag: u8, bytes: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    varint(bytes.len(), out);
    out.extend_from_slice(bytes);
}

/// `from` with `entries` added to its metadata: protobuf lets a message's fields come in any
/// order, so each `StringStringEntryProto` is appended as one more `metadata_props` (field 14 of
/// `ModelProto`). For a model without metadata (the guide's recipe) that gives it what a release
/// needs: its labels, name and version.
pub fn with_metadata(from: &Path, dir: &Scratch, name: &str, entries: &[(&str, &str)]) -> PathBuf {
    variant(from, dir, name, |b| {
        for (key, value) in entries {
            let mut entry = Vec::new();
            field(0x0a, key.as_bytes(), &mut entry);
            field(0x12, value.as_bytes(), &mut entry);
            field(0x72, &entry, b);
        }
    })
}

/// The guide's recipe (`model/testdata/guide-recipe.onnx`, a ~55 % model: right on its own
/// fixtures, wrong on many pictures) as a release candidate: its labels and a name and version.
pub fn guide_recipe_release(dir: &Scratch) -> PathBuf {
    let labels = r#"["Earth", "Jupiter", "Mars", "Mercury", "Moon", "Neptune", "Pluto", "Saturn", "Uranus", "Venus"]"#;
    with_metadata(
        &repo_root().join("model/testdata/guide-recipe.onnx"),
        dir,
        "guide-recipe.onnx",
        &[
            ("celestial.labels", labels),
            ("celestial.model_name", "guide-recipe"),
            ("celestial.model_version", "0.1.0"),
        ],
    )
}

/// `args` with the value after `flag` replaced by `value`.
pub fn set_arg(args: &mut [String], flag: &str, value: &str) {
    let i = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
    args[i + 1] = value.to_string();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_change_one_value_and_keep_the_file_length() {
        let dir = Scratch::new("model-variants");
        let shipped = std::fs::read(shipped_model()).unwrap();
        let (next, version) = next_version(&shipped_model(), &dir);
        assert_ne!(version, model_version(&shipped_model()));
        let next_bytes = std::fs::read(&next).unwrap();
        assert_eq!(next_bytes.len(), shipped.len());
        let differing = shipped
            .iter()
            .zip(&next_bytes)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(differing, 1);
        let wrong = std::fs::read(permuted_labels(&next, &dir)).unwrap();
        assert_eq!(wrong.len(), shipped.len());
        let text = String::from_utf8_lossy(&wrong);
        assert!(text.contains("[\"Earth\", \"Jupiter\", \"Moon\", \"Mercury\", \"Mars\","));
        let guide = guide_recipe_release(&dir);
        assert_eq!(model_version(&guide), "0.1.0");
        let bytes = std::fs::read(&guide).unwrap();
        assert!(
            metadata_value(&bytes, "celestial.labels")
                .1
                .starts_with("[\"Earth\"")
        );
        let mut long = Vec::new();
        varint(300, &mut long);
        assert_eq!(long, [0xac, 0x02], "a two-byte varint");
        let mut args = vec!["--model".to_string(), "a".into()];
        set_arg(&mut args, "--model", "b");
        assert_eq!(args[1], "b");
    }
}
