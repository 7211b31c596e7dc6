use std::fmt;

use serde::{Deserialize, Serialize};

/// Platform names an OS, architecture and optional variant, as in `linux/arm/v7`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform kiln runs on, in OCI/GOARCH spelling.
    pub fn host() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform {
            architecture: architecture.to_string(),
            os: "linux".to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// Parses `os/arch[/variant]`, or a bare `arch` (for Linux), normalised as
    /// containerd's `platforms.Parse` + `Normalize` do: `aarch64` and `arm64/v8` are
    /// `arm64`, `x86_64` is `amd64`, `i386` is `386`, `arm` is `arm/v7`, `armhf` is
    /// `arm/v7`, `armel` is `arm/v6`. Each part is letters, digits, `_` and `-`.
    pub fn parse(s: &str) -> Option<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        let valid = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if parts.is_empty() || parts.len() > 3 || !parts.iter().all(valid) {
            return None;
        }
        let (os, arch, variant) = match parts.as_slice() {
            [one] => match one.to_ascii_lowercase().as_str() {
                // containerd: a lone OS name means that OS on the host's architecture.
                "linux" => {
                    let h = Platform::host();
                    return Some(h);
                }
                _ => ("linux", *one, None),
            },
            [os, arch] => (*os, *arch, None),
            [os, arch, variant] => (*os, *arch, Some(*variant)),
            _ => return None,
        };
        let (architecture, variant) = normalize_arch(&arch.to_ascii_lowercase(), variant.map(str::to_ascii_lowercase));
        let os = match os.to_ascii_lowercase().as_str() {
            "macos" => "darwin".to_string(),
            o => o.to_string(),
        };
        Some(Platform {
            architecture,
            os,
            variant,
        })
    }

    /// This platform normalised (what [`Platform::parse`] makes of its text): a
    /// platform read from an image index may say `arm64/v8` or `aarch64`.
    pub fn normalized(&self) -> Platform {
        let (architecture, variant) = normalize_arch(&self.architecture.to_ascii_lowercase(), self.variant.clone());
        Platform {
            architecture,
            os: self.os.to_ascii_lowercase(),
            variant,
        }
    }

    /// Whether two platforms name the same thing once normalised.
    pub fn same(&self, other: &Platform) -> bool {
        self.normalized() == other.normalized()
    }

    /// The directory or file name buildx gives this platform's output in a
    /// multi-platform local or tar export: `linux_arm64`, `linux_arm_v7`.
    pub fn dir_name(&self) -> String {
        self.to_string().replace('/', "_")
    }
}

/// containerd's `normalizeArch`: the GOARCH name and the variant it implies.
fn normalize_arch(arch: &str, variant: Option<String>) -> (String, Option<String>) {
    let variant = variant.filter(|v| !v.is_empty());
    let (a, v): (&str, Option<String>) = match arch {
        "i386" => ("386", None),
        "x86_64" | "x86-64" | "amd64" => ("amd64", variant.filter(|v| v != "v1")),
        "aarch64" | "arm64" => ("arm64", variant.filter(|v| v != "8" && v != "v8")),
        "armhf" => ("arm", Some("v7".to_string())),
        "armel" => ("arm", Some("v6".to_string())),
        "arm" => match variant.as_deref() {
            None | Some("7") | Some("v7") => ("arm", Some("v7".to_string())),
            Some(v @ ("5" | "6" | "8")) => ("arm", Some(format!("v{v}"))),
            Some(_) => ("arm", variant),
        },
        other => (other, variant),
    };
    (a.to_string(), v)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        Platform::parse(s)
            .map(|p| p.to_string())
            .unwrap_or_else(|| "invalid".into())
    }

    #[test]
    fn parses_as_containerd_normalises() {
        assert_eq!(p("linux/amd64"), "linux/amd64");
        assert_eq!(p("linux/x86_64"), "linux/amd64");
        assert_eq!(p("linux/x86-64"), "linux/amd64");
        assert_eq!(p("linux/amd64/v1"), "linux/amd64");
        assert_eq!(p("linux/amd64/v3"), "linux/amd64/v3");
        assert_eq!(p("linux/arm64"), "linux/arm64");
        assert_eq!(p("linux/arm64/v8"), "linux/arm64");
        assert_eq!(p("linux/aarch64"), "linux/arm64");
        assert_eq!(p("arm64"), "linux/arm64");
        assert_eq!(p("aarch64"), "linux/arm64");
        assert_eq!(p("x86_64"), "linux/amd64");
        assert_eq!(p("linux/arm"), "linux/arm/v7");
        assert_eq!(p("linux/arm/7"), "linux/arm/v7");
        assert_eq!(p("linux/arm/v6"), "linux/arm/v6");
        assert_eq!(p("linux/armhf"), "linux/arm/v7");
        assert_eq!(p("linux/armel"), "linux/arm/v6");
        assert_eq!(p("linux/i386"), "linux/386");
        assert_eq!(p("linux/386"), "linux/386");
        assert_eq!(p("linux/riscv64"), "linux/riscv64");
        assert_eq!(p("linux/ppc64le"), "linux/ppc64le");
        assert_eq!(p("linux/s390x"), "linux/s390x");
        assert_eq!(p("Linux/ARM64"), "linux/arm64");
        assert_eq!(p("linux"), Platform::host().to_string());
    }

    #[test]
    fn rejects_what_containerd_rejects() {
        for bad in [
            "",
            "/",
            "linux/",
            "/amd64",
            "linux/amd64/v8/x",
            "linux/amd 64",
            "linux/am$d64",
            "linux//v7",
        ] {
            assert_eq!(p(bad), "invalid", "{bad}");
        }
    }

    #[test]
    fn index_spellings_match_the_parsed_platform() {
        let from_index = Platform {
            architecture: "arm64".into(),
            os: "linux".into(),
            variant: Some("v8".into()),
        };
        assert!(from_index.same(&Platform::parse("linux/arm64").unwrap()));
        assert!(!from_index.same(&Platform::parse("linux/amd64").unwrap()));
        assert_eq!(Platform::parse("linux/arm/v7").unwrap().dir_name(), "linux_arm_v7");
    }
}
