//! Does the server binary run on the base image? Compares the GLIBC_x.y symbol versions the binary
//! needs (ELF .gnu.version_r) with the versions the base's libc.so.6 defines (.gnu.version_d),
//! and the binary's architecture with the base's.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;

use super::build::Base;
use super::error::ImageError;
use super::layout::layer_reader;

/// A glibc symbol version such as GLIBC_2.34, ordered numerically.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GlibcVersion(pub Vec<u32>);

impl GlibcVersion {
    /// Parses `GLIBC_2.34` (also `GLIBC_2.2.5`); None for other version names (GLIBC_PRIVATE, GCC_3.0).
    pub fn parse(name: &str) -> Option<Self> {
        let v = name.strip_prefix("GLIBC_")?;
        let parts: Option<Vec<u32>> = v.split('.').map(|p| p.parse().ok()).collect();
        parts.filter(|p| !p.is_empty()).map(GlibcVersion)
    }
}

impl std::fmt::Display for GlibcVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s: Vec<String> = self.0.iter().map(u32::to_string).collect();
        write!(f, "GLIBC_{}", s.join("."))
    }
}

/// ELF facts about a binary.
#[derive(Debug, Clone)]
pub struct BinaryInfo {
    /// GLIBC_x.y versions required from libc.so.6 (and other glibc libraries).
    pub required: BTreeSet<GlibcVersion>,
    /// The OCI architecture name (amd64, arm64, ...).
    pub architecture: &'static str,
    /// Whether it is dynamically linked (has an interpreter).
    pub dynamic: bool,
}

/// Reads the glibc versions an ELF binary needs.
pub fn binary_info(bytes: &[u8]) -> Result<BinaryInfo, String> {
    let elf = goblin::elf::Elf::parse(bytes).map_err(|e| format!("not an ELF executable: {e}"))?;
    let mut required = BTreeSet::new();
    if let Some(verneed) = &elf.verneed {
        for need in verneed.iter() {
            for aux in need.iter() {
                if let Some(v) = elf
                    .dynstrtab
                    .get_at(aux.vna_name)
                    .and_then(GlibcVersion::parse)
                {
                    required.insert(v);
                }
            }
        }
    }
    let architecture = match elf.header.e_machine {
        goblin::elf::header::EM_X86_64 => "amd64",
        goblin::elf::header::EM_AARCH64 => "arm64",
        goblin::elf::header::EM_ARM => "arm",
        goblin::elf::header::EM_386 => "386",
        goblin::elf::header::EM_PPC64 => "ppc64le",
        goblin::elf::header::EM_S390 => "s390x",
        goblin::elf::header::EM_RISCV => "riscv64",
        _ => "unknown",
    };
    Ok(BinaryInfo {
        required,
        architecture,
        dynamic: elf.interpreter.is_some(),
    })
}

/// The GLIBC_x.y versions a libc.so.6 defines.
pub fn libc_versions(bytes: &[u8]) -> Result<BTreeSet<GlibcVersion>, String> {
    let elf =
        goblin::elf::Elf::parse(bytes).map_err(|e| format!("libc.so.6 is not an ELF file: {e}"))?;
    let mut out = BTreeSet::new();
    if let Some(verdef) = &elf.verdef {
        for def in verdef.iter() {
            for aux in def.iter() {
                if let Some(v) = elf
                    .dynstrtab
                    .get_at(aux.vda_name)
                    .and_then(GlibcVersion::parse)
                {
                    out.insert(v);
                }
            }
        }
    }
    if out.is_empty() {
        return Err("libc.so.6 defines no GLIBC_ symbol versions (not glibc?)".into());
    }
    Ok(out)
}

/// The required versions the base lacks (empty: the binary runs on the base).
pub fn missing(
    required: &BTreeSet<GlibcVersion>,
    provided: &BTreeSet<GlibcVersion>,
) -> Vec<GlibcVersion> {
    required
        .iter()
        .filter(|v| !provided.contains(v))
        .cloned()
        .collect()
}

/// Finds the base's libc.so.6 (following a symlink to libc-2.x.so) and returns its bytes.
pub fn find_libc(layers: &[(String, Vec<u8>)]) -> Result<Option<Vec<u8>>, String> {
    let mut regular: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut links: BTreeMap<String, String> = BTreeMap::new();
    for (media_type, data) in layers {
        let mut ar = tar::Archive::new(layer_reader(media_type, data)?);
        for entry in ar
            .entries()
            .map_err(|e| format!("layer is not a tar: {e}"))?
        {
            let mut entry = entry.map_err(|e| format!("layer is not a tar: {e}"))?;
            let path = entry
                .path()
                .map_err(|e| e.to_string())?
                .to_string_lossy()
                .trim_start_matches("./")
                .trim_start_matches('/')
                .to_string();
            let name = path.rsplit('/').next().unwrap_or("");
            if !(name == "libc.so.6" || (name.starts_with("libc-") && name.ends_with(".so"))) {
                continue;
            }
            match entry.header().entry_type() {
                tar::EntryType::Regular => {
                    let mut buf = Vec::new();
                    entry.read_to_end(&mut buf).map_err(|e| e.to_string())?;
                    links.remove(&path);
                    regular.insert(path, buf);
                }
                tar::EntryType::Symlink => {
                    if let Ok(Some(t)) = entry.link_name() {
                        regular.remove(&path);
                        links.insert(path, t.to_string_lossy().to_string());
                    }
                }
                _ => {}
            }
        }
    }
    if let Some((_, data)) = regular
        .iter()
        .find(|(p, _)| p.ends_with("/libc.so.6") || *p == "libc.so.6")
    {
        return Ok(Some(data.clone()));
    }
    for (path, target) in &links {
        if !path.ends_with("libc.so.6") {
            continue;
        }
        let target_name = target.rsplit('/').next().unwrap_or(target);
        if let Some((_, data)) = regular
            .iter()
            .find(|(p, _)| p.rsplit('/').next() == Some(target_name))
        {
            return Ok(Some(data.clone()));
        }
    }
    Ok(None)
}

/// Checks that the binary's architecture and glibc needs match the base.
pub fn check_runs_on_base(
    base: &Base,
    binary: &[u8],
    base_layers: &[(String, Vec<u8>)],
) -> Result<(), ImageError> {
    let name = base.reference.whole();
    let info = binary_info(binary).map_err(|m| ImageError::Input {
        what: "server binary",
        path: PathBuf::from("--server-binary"),
        message: m,
    })?;
    let base_arch = base.config["architecture"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if !base_arch.is_empty() && base_arch != info.architecture {
        return Err(ImageError::Architecture {
            base: name,
            binary: info.architecture.into(),
            base_arch,
        });
    }
    if !info.dynamic || info.required.is_empty() {
        return Ok(());
    }
    let libc = find_libc(base_layers).map_err(|m| ImageError::Base {
        base: name.clone(),
        message: m,
    })?;
    let Some(libc) = libc else {
        return Err(ImageError::NoGlibc { base: name });
    };
    let provided = libc_versions(&libc).map_err(|m| ImageError::Base {
        base: name.clone(),
        message: m,
    })?;
    let missing: Vec<String> = missing(&info.required, &provided)
        .iter()
        .map(ToString::to_string)
        .collect();
    if !missing.is_empty() {
        let newest = provided
            .iter()
            .max()
            .map(ToString::to_string)
            .unwrap_or_default();
        return Err(ImageError::GlibcTooOld {
            base: name,
            missing,
            newest,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::build::tests::base;
    use crate::oci::layout::{Entry, deterministic_gzip, deterministic_tar};
    use crate::oci::media::{OCI_LAYER_GZIP, OCI_LAYER_TAR};
    use serde_json::json;

    #[test]
    fn version_ordering() {
        let a = GlibcVersion::parse("GLIBC_2.9").unwrap();
        let b = GlibcVersion::parse("GLIBC_2.34").unwrap();
        let c = GlibcVersion::parse("GLIBC_2.2.5").unwrap();
        assert!(a < b && c < a);
        assert_eq!(b.to_string(), "GLIBC_2.34");
        assert!(GlibcVersion::parse("GLIBC_PRIVATE").is_none());
        assert!(GlibcVersion::parse("GCC_3.0").is_none());
    }

    fn host_libc() -> Option<PathBuf> {
        [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/aarch64-linux-gnu/libc.so.6",
            "/usr/lib64/libc.so.6",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
    }

    #[test]
    fn this_test_binary_runs_on_this_hosts_libc() {
        // The real check on real files: the test executable itself and the host's glibc.
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let info = binary_info(&exe).unwrap();
        assert!(info.dynamic);
        assert!(
            !info.required.is_empty(),
            "a dynamically linked Rust binary needs some GLIBC_ versions"
        );
        let Some(libc) = host_libc() else {
            eprintln!("SKIP: no glibc found on this host");
            return;
        };
        let provided = libc_versions(&std::fs::read(libc).unwrap()).unwrap();
        assert!(missing(&info.required, &provided).is_empty());
        // An older glibc (only up to 2.17) lacks what the binary needs.
        let old: BTreeSet<GlibcVersion> = provided
            .iter()
            .filter(|v| **v <= GlibcVersion(vec![2, 17]))
            .cloned()
            .collect();
        let newest_needed = info.required.iter().max().unwrap();
        if *newest_needed > GlibcVersion(vec![2, 17]) {
            assert!(!missing(&info.required, &old).is_empty());
        }
    }

    #[test]
    fn non_elf_is_an_error() {
        assert!(binary_info(b"#!/bin/sh\necho hi\n").is_err());
        assert!(libc_versions(b"nope").is_err());
    }

    #[test]
    fn finds_libc_through_symlinks() {
        let mut e = BTreeMap::new();
        e.insert(
            "lib/x86_64-linux-gnu/libc-2.31.so".into(),
            Entry::File {
                data: b"LIBC".to_vec(),
                mode: 0o755,
            },
        );
        e.insert(
            "lib/x86_64-linux-gnu/libc.so.6".into(),
            Entry::Symlink("libc-2.31.so".into()),
        );
        let layer = deterministic_gzip(&deterministic_tar(&e, 0));
        assert_eq!(
            find_libc(&[(OCI_LAYER_GZIP.into(), layer)])
                .unwrap()
                .unwrap(),
            b"LIBC"
        );
        let mut e = BTreeMap::new();
        e.insert(
            "usr/lib/x86_64-linux-gnu/libc.so.6".into(),
            Entry::File {
                data: b"L6".to_vec(),
                mode: 0o755,
            },
        );
        let layer = deterministic_tar(&e, 0);
        assert_eq!(
            find_libc(&[(OCI_LAYER_TAR.into(), layer)])
                .unwrap()
                .unwrap(),
            b"L6"
        );
        let empty = deterministic_tar(&BTreeMap::new(), 0);
        assert!(
            find_libc(&[(OCI_LAYER_TAR.into(), empty)])
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn glibc_check_against_a_real_libc() {
        // The real test binary against the host's real libc, packed like a base layer.
        let Some(libc) = host_libc() else {
            eprintln!("SKIP: no x86_64 glibc on this host");
            return;
        };
        let mut e = BTreeMap::new();
        e.insert(
            "usr/lib/x86_64-linux-gnu/libc.so.6".into(),
            Entry::File {
                data: std::fs::read(libc).unwrap(),
                mode: 0o755,
            },
        );
        let layers = vec![(
            OCI_LAYER_GZIP.to_string(),
            deterministic_gzip(&deterministic_tar(&e, 0)),
        )];
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        check_runs_on_base(&base(false), &exe, &layers).unwrap();
        let no_libc = vec![(
            OCI_LAYER_TAR.to_string(),
            deterministic_tar(&BTreeMap::new(), 0),
        )];
        assert!(matches!(
            check_runs_on_base(&base(false), &exe, &no_libc),
            Err(ImageError::NoGlibc { .. })
        ));
        let mut arm = base(false);
        arm.config["architecture"] = json!("arm64");
        assert!(matches!(
            check_runs_on_base(&arm, &exe, &layers),
            Err(ImageError::Architecture { .. })
        ));
    }
}
