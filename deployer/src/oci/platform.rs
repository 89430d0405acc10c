//! Platforms (`linux/arm64`, `linux/arm/v7`) and the per-platform flags of a build: the
//! `--platform` list, and `--server-binary` / `--onnxruntime` values that are either a plain PATH
//! (every platform) or `PLATFORM=PATH` (that platform). A leaf of `oci/` but for its error.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::error::ImageError;

/// The architectures an image can be built for: the OCI names of the ELF machines the build can
/// tell apart (see [`super::glibc::binary_info`]).
const ARCHITECTURES: [&str; 7] = [
    "amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64",
];

/// Names people write for an architecture, and the OCI name they mean.
const ALIASES: [(&str, &str); 5] = [
    ("x86_64", "amd64"),
    ("x86-64", "amd64"),
    ("aarch64", "arm64"),
    ("armhf", "arm"),
    ("i386", "386"),
];

/// Operating systems a reference may name before `=` (only linux can be built: the server is a
/// Linux binary), so that `windows/amd64=PATH` is refused rather than taken for a path.
const OSES: [&str; 5] = ["linux", "windows", "darwin", "freebsd", "netbsd"];

/// One platform of an image: `os/architecture[/variant]`, in OCI's names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Platform {
    type Err = String;

    /// Parses `os/arch[/variant]`; the message says what is wrong and what would be right.
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.trim().split('/').collect();
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, variant] => (*os, *arch, Some(*variant)),
            _ => {
                return Err(format!(
                    "{s:?} is not OS/ARCH[/VARIANT] (for example linux/amd64 or linux/arm64)"
                ));
            }
        };
        if os != "linux" {
            return Err(format!(
                "unsupported OS {os:?}: the server is a Linux binary, so only linux/... images can be built"
            ));
        }
        if let Some((_, oci)) = ALIASES.iter().find(|(alias, _)| *alias == arch) {
            return Err(format!(
                "unknown architecture {arch:?}: OCI calls it {oci:?} (linux/{oci})"
            ));
        }
        if !ARCHITECTURES.contains(&arch) {
            return Err(format!(
                "unknown architecture {arch:?} (one of {})",
                ARCHITECTURES.join(", ")
            ));
        }
        if let Some(v) = variant {
            let numbered =
                v.len() > 1 && v.starts_with('v') && v[1..].bytes().all(|b| b.is_ascii_digit());
            if !numbered || !["arm", "arm64", "amd64"].contains(&arch) {
                return Err(format!("unknown variant {v:?} of {arch}"));
            }
        }
        Ok(Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: variant.map(str::to_string),
        })
    }
}

/// The platform of the machine the deployer runs on, when it is one an image can be built for.
pub fn host_architecture() -> Option<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => Some("amd64"),
        "aarch64" => Some("arm64"),
        _ => None,
    }
}

/// Parses the `--platform` value: one platform or several, comma-separated, each once.
pub fn parse_platforms(value: &str) -> Result<Vec<Platform>, ImageError> {
    let bad = |message: String| ImageError::Platform {
        flag: "--platform",
        value: value.to_string(),
        message,
    };
    let mut out: Vec<Platform> = Vec::new();
    for part in value.split(',') {
        if part.trim().is_empty() {
            return Err(bad("an empty platform in the list".into()));
        }
        let p: Platform = part.parse().map_err(bad)?;
        if out.contains(&p) {
            return Err(bad(format!("{p} is listed twice")));
        }
        out.push(p);
    }
    Ok(out)
}

/// A per-platform flag's values: the plain one (for every platform without its own) and the
/// `PLATFORM=PATH` ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PerPlatform {
    pub plain: Option<PathBuf>,
    pub by_platform: BTreeMap<Platform, PathBuf>,
}

impl PerPlatform {
    /// The value for `platform`: its own, else the plain one.
    pub fn get(&self, platform: &Platform) -> Option<&Path> {
        self.by_platform
            .get(platform)
            .or(self.plain.as_ref())
            .map(PathBuf::as_path)
    }
}

/// Parses the values of `flag`: each a plain PATH (at most one) or `PLATFORM=PATH` for one of
/// `platforms` (at most one each). A value whose part before `=` starts with an OS name is a
/// platform reference, and is refused when it is not one of `platforms`: a typo must not become
/// a file name.
pub fn parse_per_platform(
    flag: &'static str,
    values: &[String],
    platforms: &[Platform],
) -> Result<PerPlatform, ImageError> {
    let mut out = PerPlatform::default();
    for value in values {
        let bad = |message: String| ImageError::Platform {
            flag,
            value: value.clone(),
            message,
        };
        let qualified = value
            .split_once('=')
            .filter(|(p, _)| OSES.iter().any(|os| p.starts_with(&format!("{os}/"))));
        let Some((platform, path)) = qualified else {
            if out.plain.replace(PathBuf::from(value)).is_some() {
                return Err(bad(format!(
                    "{flag} without a platform is given twice (use PLATFORM=PATH for a platform's own)"
                )));
            }
            continue;
        };
        let platform: Platform = platform.parse().map_err(bad)?;
        if !platforms.contains(&platform) {
            let building: Vec<String> = platforms.iter().map(ToString::to_string).collect();
            return Err(bad(format!(
                "{platform} is not built (--platform {})",
                building.join(",")
            )));
        }
        if path.is_empty() {
            return Err(bad(format!("no path after {platform}=")));
        }
        if out
            .by_platform
            .insert(platform.clone(), path.into())
            .is_some()
        {
            return Err(bad(format!("{platform} is given twice")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    fn message(e: ImageError) -> String {
        e.to_string()
    }

    #[test]
    fn platforms_parse_in_order_and_bad_ones_say_why() {
        let ps = parse_platforms("linux/amd64,linux/arm64").unwrap();
        assert_eq!(ps, vec![p("linux/amd64"), p("linux/arm64")]);
        assert_eq!(ps[1].to_string(), "linux/arm64");
        assert_eq!(p("linux/arm/v7").variant.as_deref(), Some("v7"));
        assert_eq!(
            parse_platforms(" linux/arm64 ").unwrap(),
            vec![p("linux/arm64")]
        );
        for (value, says) in [
            ("linux/x86_64", "OCI calls it \"amd64\""),
            ("linux/aarch64,linux/amd64", "OCI calls it \"arm64\""),
            ("linux/sparc", "unknown architecture \"sparc\""),
            ("windows/amd64", "only linux/... images"),
            ("linux", "is not OS/ARCH[/VARIANT]"),
            ("linux/arm64/v8/x", "is not OS/ARCH[/VARIANT]"),
            ("linux/arm64/eight", "unknown variant \"eight\""),
            ("linux/s390x/v2", "unknown variant \"v2\" of s390x"),
            ("linux/amd64,,linux/arm64", "an empty platform"),
            ("", "an empty platform"),
            ("linux/amd64,linux/amd64", "linux/amd64 is listed twice"),
        ] {
            let m = message(parse_platforms(value).unwrap_err());
            assert!(m.starts_with(&format!("--platform {value}: ")), "{m}");
            assert!(m.contains(says), "{value}: {m}");
        }
    }

    #[test]
    fn per_platform_values_are_plain_or_for_a_built_platform() {
        let both = [p("linux/amd64"), p("linux/arm64")];
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let got = parse_per_platform(
            "--server-binary",
            &v(&["target/release/celestial-server", "linux/arm64=arm/x=y"]),
            &both,
        )
        .unwrap();
        assert_eq!(
            got.get(&both[0]),
            Some(Path::new("target/release/celestial-server"))
        );
        assert_eq!(got.get(&both[1]), Some(Path::new("arm/x=y")));
        // a path with `=` in it that names no platform stays a path
        let odd = parse_per_platform("--onnxruntime", &v(&["out/a=b.so"]), &both).unwrap();
        assert_eq!(odd.plain.as_deref(), Some(Path::new("out/a=b.so")));
        let none = parse_per_platform("--onnxruntime", &[], &both).unwrap();
        assert_eq!(none.get(&both[1]), None);

        for (values, says) in [
            (
                v(&["linux/s390x=x"]),
                "linux/s390x is not built (--platform linux/amd64,linux/arm64)",
            ),
            (v(&["linux/x86_64=x"]), "OCI calls it \"amd64\""),
            (v(&["linux/arm64="]), "no path after linux/arm64="),
            (
                v(&["linux/arm64=a", "linux/arm64=b"]),
                "linux/arm64 is given twice",
            ),
            (v(&["a", "b"]), "without a platform is given twice"),
            (v(&["windows/amd64=x"]), "only linux/... images"),
        ] {
            let m = message(parse_per_platform("--server-binary", &values, &both).unwrap_err());
            assert!(m.starts_with("--server-binary "), "{m}");
            assert!(m.contains(says), "{values:?}: {m}");
        }
    }
}
