//! Deterministic bytes: tar layers with sorted entries, fixed times, owners and modes; gzip without
//! timestamp or name; JSON with sorted keys. The same inputs give the same digest. Also reading a
//! layer's tar stream back (gzip or plain). A leaf of `oci/`.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use serde_json::Value;

/// One entry of the layer.
#[derive(Debug, Clone)]
pub enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
}

/// A deterministic tar: entries sorted by path, parent directories added, uid/gid 0, fixed mtime.
pub fn deterministic_tar(entries: &BTreeMap<String, Entry>, mtime: u64) -> Vec<u8> {
    let mut all = entries.clone();
    for path in entries.keys() {
        let mut p = path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            all.entry(parent.to_string()).or_insert(Entry::Dir);
            p = parent;
        }
    }
    let mut b = tar::Builder::new(Vec::new());
    for (path, entry) in &all {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        h.set_username("root").expect("short name");
        h.set_groupname("root").expect("short name");
        match entry {
            Entry::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, format!("{path}/"), std::io::empty())
                    .expect("writing to memory");
            }
            Entry::File { data, mode } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, data.as_slice())
                    .expect("writing to memory");
            }
            Entry::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, path, target)
                    .expect("writing to memory");
            }
        }
    }
    b.into_inner().expect("writing to memory")
}

/// Deterministic gzip: no timestamp, no file name, fixed OS byte, fixed level.
pub fn deterministic_gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::new(6));
    enc.write_all(data).expect("writing to memory");
    enc.finish().expect("writing to memory")
}

/// Serializes JSON with sorted keys and no whitespace (canonical enough for a stable digest).
pub fn canonical_json(v: &Value) -> Vec<u8> {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let sorted: BTreeMap<&String, Value> =
                    m.iter().map(|(k, v)| (k, sort(v))).collect();
                let mut out = serde_json::Map::new();
                for (k, v) in sorted {
                    out.insert(k.clone(), v);
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_vec(&sort(v)).expect("JSON serializes")
}

/// Reads a layer blob's tar stream (gzip or plain).
pub fn layer_reader<'a>(media_type: &str, data: &'a [u8]) -> Result<Box<dyn Read + 'a>, String> {
    if media_type.ends_with("gzip") || data.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::GzDecoder::new(data)))
    } else if media_type.ends_with("zstd") {
        Err(format!(
            "cannot inspect a {media_type} layer (only gzip and plain tar)"
        ))
    } else {
        Ok(Box::new(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn entries() -> BTreeMap<String, Entry> {
        let mut e = BTreeMap::new();
        e.insert(
            "app/z".into(),
            Entry::File {
                data: b"zz".to_vec(),
                mode: 0o644,
            },
        );
        e.insert(
            "app/a/bin".into(),
            Entry::File {
                data: b"\x7fELF".to_vec(),
                mode: 0o755,
            },
        );
        e.insert("app/link".into(), Entry::Symlink("z".into()));
        e
    }

    #[test]
    fn tar_is_deterministic_sorted_and_owned_by_root() {
        let a = deterministic_tar(&entries(), 1_700_000_000);
        let b = deterministic_tar(&entries(), 1_700_000_000);
        assert_eq!(a, b);
        assert_ne!(a, deterministic_tar(&entries(), 1_700_000_001));
        let mut ar = tar::Archive::new(a.as_slice());
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!(
                (h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap()),
                (0, 0, 1_700_000_000)
            );
            seen.push((
                e.path().unwrap().to_string_lossy().to_string(),
                h.mode().unwrap(),
            ));
        }
        assert_eq!(
            seen,
            vec![
                ("app/".to_string(), 0o755),
                ("app/a/".to_string(), 0o755),
                ("app/a/bin".to_string(), 0o755),
                ("app/link".to_string(), 0o777),
                ("app/z".to_string(), 0o644),
            ]
        );
    }

    #[test]
    fn gzip_and_json_are_deterministic() {
        let data = vec![7u8; 100_000];
        assert_eq!(deterministic_gzip(&data), deterministic_gzip(&data));
        let gz = deterministic_gzip(&data);
        assert_eq!(&gz[4..8], &[0, 0, 0, 0], "no timestamp");
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        let a: Value =
            serde_json::from_str(r#"{"b": 1, "a": {"d": [2, {"z": 0, "y": 1}], "c": null}}"#)
                .unwrap();
        assert_eq!(
            String::from_utf8(canonical_json(&a)).unwrap(),
            r#"{"a":{"c":null,"d":[2,{"y":1,"z":0}]},"b":1}"#
        );
    }
}
