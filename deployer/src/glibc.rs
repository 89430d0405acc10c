//! Does the server binary run on the base image? Compares the GLIBC_x.y symbol versions the binary
//! needs (ELF .gnu.version_r) with the versions the base's libc.so.6 defines (.gnu.version_d).

use std::collections::BTreeSet;

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

#[cfg(test)]
mod tests {
    use super::*;

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

    fn find_libc() -> Option<std::path::PathBuf> {
        [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/aarch64-linux-gnu/libc.so.6",
            "/usr/lib64/libc.so.6",
        ]
        .iter()
        .map(std::path::PathBuf::from)
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
        let Some(libc) = find_libc() else {
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
}
