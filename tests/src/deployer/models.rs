//! Variants of the served model for release tests: another version (a later release of the same
//! model), and one whose labels are permuted (a model its server must refuse at start). Each is
//! the shipped ONNX file with one metadata value changed in place, keeping every length, so the
//! protobuf stays valid without a protobuf library.

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
        let mut args = vec!["--model".to_string(), "a".into()];
        set_arg(&mut args, "--model", "b");
        assert_eq!(args[1], "b");
    }
}
