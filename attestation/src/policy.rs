//! Appraisal policy: what a verified report must contain to be accepted.
//!
//! Covers what google/go-sev-guest's `validate.Options` offers: allowed
//! measurements, host data, report data (exact or nonce prefix), family and
//! image id, ID-key and author-key digests, chip ids, minimum guest SVN,
//! minimum TCB per component (current, committed and reported, and
//! separately the launch TCB), minimum firmware build and version, guest
//! policy bits required or forbidden and a minimum ABI, exact VMPL,
//! PLATFORM_INFO bits, and VCEK-only or VLEK-only.
//!
//! The TOML file format is documented in docs/attestation.md. Command-line
//! flags build the same [`PolicyFile`] and are merged over the file.

use serde::Deserialize;
use thiserror::Error;

use crate::hex::{self, HexError};
use crate::report::{
    AttestationReport, GuestPolicy, PlatformInfo, Product, SigningKey, TcbVersion,
};
use crate::verify::{Check, CheckClass, Status};

/// Why a policy could not be read.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PolicyError {
    #[error("policy file is not valid TOML for this format: {0}")]
    ParseToml(String),
    #[error("policy {field}")]
    DecodeHex {
        field: &'static str,
        #[source]
        source: HexError,
    },
    #[error("policy {field}: {value:?} is not MAJOR.MINOR")]
    ParseVersion { field: &'static str, value: String },
    #[error("policy {field}: unknown bit name {name:?} (known: {known})")]
    FindBitName {
        field: &'static str,
        name: String,
        known: String,
    },
    #[error("policy {field}: {value:?} is not a TCB such as bl=3,tee=0,snp=8,ucode=115[,fmc=1]")]
    ParseTcb { field: &'static str, value: String },
}

/// Minimum security patch level per TCB component; absent = unconstrained.
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TcbMinimum {
    pub fmc: Option<u8>,
    pub bootloader: Option<u8>,
    pub tee: Option<u8>,
    pub snp: Option<u8>,
    pub microcode: Option<u8>,
}

impl TcbMinimum {
    /// Parses `bl=3,tee=0,snp=8,ucode=115[,fmc=1]` (flag form).
    pub fn parse(field: &'static str, text: &str) -> Result<Self, PolicyError> {
        let bad = || PolicyError::ParseTcb {
            field,
            value: text.to_string(),
        };
        let mut t = TcbMinimum::default();
        for part in text.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(bad)?;
            let v: u8 = v.trim().parse().map_err(|_| bad())?;
            match k.trim() {
                "fmc" => t.fmc = Some(v),
                "bl" | "bootloader" => t.bootloader = Some(v),
                "tee" => t.tee = Some(v),
                "snp" => t.snp = Some(v),
                "ucode" | "microcode" => t.microcode = Some(v),
                _ => return Err(bad()),
            }
        }
        Ok(t)
    }
}

/// Bits that must be set or clear.
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BitRequirements {
    #[serde(default)]
    pub require: Vec<String>,
    #[serde(default)]
    pub forbid: Vec<String>,
    /// Guest policy only: minimum ABI as "MAJOR.MINOR".
    pub min_abi: Option<String>,
}

/// The policy as written (TOML or flags), before validation.
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    #[serde(default)]
    pub measurements: Vec<String>,
    pub report_data: Option<String>,
    pub nonce: Option<String>,
    pub host_data: Option<String>,
    pub family_id: Option<String>,
    pub image_id: Option<String>,
    #[serde(default)]
    pub id_key_digests: Vec<String>,
    #[serde(default)]
    pub author_key_digests: Vec<String>,
    #[serde(default)]
    pub chip_ids: Vec<String>,
    pub require_author_key: Option<bool>,
    pub min_guest_svn: Option<u32>,
    pub vmpl: Option<u32>,
    pub signing_key: Option<SigningKey>,
    pub product: Option<Product>,
    pub min_tcb: Option<TcbMinimum>,
    pub min_launch_tcb: Option<TcbMinimum>,
    pub min_build: Option<u8>,
    pub min_version: Option<String>,
    pub guest_policy: Option<BitRequirements>,
    pub platform_info: Option<BitRequirements>,
}

impl PolicyFile {
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        toml::from_str(text).map_err(|e| {
            // toml's messages span lines; errors here are one line.
            let at = e
                .span()
                .map(|s| format!(" (at byte {})", s.start))
                .unwrap_or_default();
            PolicyError::ParseToml(format!("{}{at}", e.message().replace('\n', " ")))
        })
    }

    /// Lays `other` over `self`: lists are extended, single values replaced.
    pub fn merge(mut self, other: PolicyFile) -> PolicyFile {
        fn or<T>(a: Option<T>, b: Option<T>) -> Option<T> {
            b.or(a)
        }
        fn bits(a: Option<BitRequirements>, b: Option<BitRequirements>) -> Option<BitRequirements> {
            match (a, b) {
                (Some(mut a), Some(b)) => {
                    a.require.extend(b.require);
                    a.forbid.extend(b.forbid);
                    a.min_abi = b.min_abi.or(a.min_abi);
                    Some(a)
                }
                (a, b) => b.or(a),
            }
        }
        self.measurements.extend(other.measurements);
        self.id_key_digests.extend(other.id_key_digests);
        self.author_key_digests.extend(other.author_key_digests);
        self.chip_ids.extend(other.chip_ids);
        PolicyFile {
            report_data: or(self.report_data, other.report_data),
            nonce: or(self.nonce, other.nonce),
            host_data: or(self.host_data, other.host_data),
            family_id: or(self.family_id, other.family_id),
            image_id: or(self.image_id, other.image_id),
            require_author_key: or(self.require_author_key, other.require_author_key),
            min_guest_svn: or(self.min_guest_svn, other.min_guest_svn),
            vmpl: or(self.vmpl, other.vmpl),
            signing_key: or(self.signing_key, other.signing_key),
            product: or(self.product, other.product),
            min_tcb: or(self.min_tcb, other.min_tcb),
            min_launch_tcb: or(self.min_launch_tcb, other.min_launch_tcb),
            min_build: or(self.min_build, other.min_build),
            min_version: or(self.min_version, other.min_version),
            guest_policy: bits(self.guest_policy, other.guest_policy),
            platform_info: bits(self.platform_info, other.platform_info),
            ..self
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == PolicyFile::default()
    }

    /// Validates every value so that appraisal cannot fail on bad input.
    pub fn compile(&self) -> Result<Policy, PolicyError> {
        let many = |field: &'static str, v: &[String]| -> Result<Vec<Vec<u8>>, PolicyError> {
            v.iter()
                .map(|s| hex::decode(s).map_err(|source| PolicyError::DecodeHex { field, source }))
                .collect()
        };
        let exact =
            |field: &'static str, v: &[String], n: usize| -> Result<Vec<Vec<u8>>, PolicyError> {
                let out = many(field, v)?;
                for x in &out {
                    if x.len() != n {
                        return Err(PolicyError::DecodeHex {
                            field,
                            source: HexError::CheckLength {
                                expected: n,
                                got: x.len(),
                            },
                        });
                    }
                }
                Ok(out)
            };
        let one = |field: &'static str,
                   v: &Option<String>,
                   n: usize,
                   pad: bool|
         -> Result<Option<Vec<u8>>, PolicyError> {
            let Some(s) = v else { return Ok(None) };
            let mut b =
                hex::decode(s).map_err(|source| PolicyError::DecodeHex { field, source })?;
            if pad && b.len() < n {
                b.resize(n, 0);
            }
            if b.len() != n {
                return Err(PolicyError::DecodeHex {
                    field,
                    source: HexError::CheckLength {
                        expected: n,
                        got: b.len(),
                    },
                });
            }
            Ok(Some(b))
        };
        let nonce = match &self.nonce {
            Some(s) => {
                let b = hex::decode(s).map_err(|source| PolicyError::DecodeHex {
                    field: "nonce",
                    source,
                })?;
                if b.is_empty() || b.len() > 64 {
                    return Err(PolicyError::DecodeHex {
                        field: "nonce",
                        source: HexError::CheckLength {
                            expected: 64,
                            got: b.len(),
                        },
                    });
                }
                Some(b)
            }
            None => None,
        };
        let guest_bits = self.guest_policy.clone().unwrap_or_default();
        let platform_bits = self.platform_info.clone().unwrap_or_default();
        let names = |field: &'static str,
                     list: &[String],
                     table: &[(&str, u32)]|
         -> Result<Vec<(String, u32)>, PolicyError> {
            list.iter()
                .map(|n| {
                    let key = n.trim().to_ascii_lowercase().replace('-', "_");
                    table
                        .iter()
                        .find(|(name, _)| *name == key)
                        .map(|(name, bit)| (name.to_string(), *bit))
                        .ok_or_else(|| PolicyError::FindBitName {
                            field,
                            name: n.clone(),
                            known: table.iter().map(|(x, _)| *x).collect::<Vec<_>>().join(", "),
                        })
                })
                .collect()
        };
        Ok(Policy {
            measurements: exact("measurements", &self.measurements, 48)?,
            report_data: one("report_data", &self.report_data, 64, true)?,
            nonce,
            host_data: one("host_data", &self.host_data, 32, false)?,
            family_id: one("family_id", &self.family_id, 16, false)?,
            image_id: one("image_id", &self.image_id, 16, false)?,
            id_key_digests: exact("id_key_digests", &self.id_key_digests, 48)?,
            author_key_digests: exact("author_key_digests", &self.author_key_digests, 48)?,
            // A CHIP_ID is 64 bytes (Milan, Genoa) or, for Turin, the 8
            // bytes its VCEK's hwID carries; anything shorter would match
            // by prefix far too much.
            chip_ids: many("chip_ids", &self.chip_ids)?
                .into_iter()
                .map(|c| match c.len() {
                    8 | 64 => Ok(c),
                    got => Err(PolicyError::DecodeHex {
                        field: "chip_ids",
                        source: HexError::CheckLength { expected: 64, got },
                    }),
                })
                .collect::<Result<_, _>>()?,
            require_author_key: self.require_author_key,
            min_guest_svn: self.min_guest_svn,
            vmpl: self.vmpl,
            signing_key: self.signing_key,
            product: self.product,
            min_tcb: self.min_tcb.clone(),
            min_launch_tcb: self.min_launch_tcb.clone(),
            min_build: self.min_build,
            min_version: self
                .min_version
                .as_deref()
                .map(|v| parse_major_minor("min_version", v))
                .transpose()?,
            min_abi: guest_bits
                .min_abi
                .as_deref()
                .map(|v| parse_major_minor("guest_policy.min_abi", v))
                .transpose()?,
            guest_require: names(
                "guest_policy.require",
                &guest_bits.require,
                &GuestPolicy::FLAGS,
            )?,
            guest_forbid: names(
                "guest_policy.forbid",
                &guest_bits.forbid,
                &GuestPolicy::FLAGS,
            )?,
            platform_require: names(
                "platform_info.require",
                &platform_bits.require,
                &PlatformInfo::FLAGS,
            )?,
            platform_forbid: names(
                "platform_info.forbid",
                &platform_bits.forbid,
                &PlatformInfo::FLAGS,
            )?,
        })
    }
}

fn parse_major_minor(field: &'static str, v: &str) -> Result<(u8, u8), PolicyError> {
    let bad = || PolicyError::ParseVersion {
        field,
        value: v.to_string(),
    };
    let (a, b) = v.trim().split_once('.').ok_or_else(bad)?;
    Ok((a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?))
}

/// A validated policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub measurements: Vec<Vec<u8>>,
    pub report_data: Option<Vec<u8>>,
    pub nonce: Option<Vec<u8>>,
    pub host_data: Option<Vec<u8>>,
    pub family_id: Option<Vec<u8>>,
    pub image_id: Option<Vec<u8>>,
    pub id_key_digests: Vec<Vec<u8>>,
    pub author_key_digests: Vec<Vec<u8>>,
    pub chip_ids: Vec<Vec<u8>>,
    pub require_author_key: Option<bool>,
    pub min_guest_svn: Option<u32>,
    pub vmpl: Option<u32>,
    pub signing_key: Option<SigningKey>,
    pub product: Option<Product>,
    pub min_tcb: Option<TcbMinimum>,
    pub min_launch_tcb: Option<TcbMinimum>,
    pub min_build: Option<u8>,
    pub min_version: Option<(u8, u8)>,
    pub min_abi: Option<(u8, u8)>,
    pub guest_require: Vec<(String, u32)>,
    pub guest_forbid: Vec<(String, u32)>,
    pub platform_require: Vec<(String, u32)>,
    pub platform_forbid: Vec<(String, u32)>,
}

const P: CheckClass = CheckClass::Policy;

fn check(name: &str, ok: bool, pass: String, fail: String) -> Check {
    if ok {
        Check::new(name, P, Status::Pass, pass)
    } else {
        Check::new(name, P, Status::Fail, fail)
    }
}

fn tcb_below(
    min: &TcbMinimum,
    tcb: &TcbVersion,
    product: Option<Product>,
    report: &AttestationReport,
) -> Option<String> {
    let layout = product.map_or_else(|| report.tcb_layout(), Product::tcb_layout);
    let t = tcb.parts(layout);
    let pairs = [
        ("fmc", t.fmc, min.fmc),
        ("bootloader", Some(t.bootloader), min.bootloader),
        ("tee", Some(t.tee), min.tee),
        ("snp", Some(t.snp), min.snp),
        ("microcode", Some(t.microcode), min.microcode),
    ];
    let low: Vec<String> = pairs
        .iter()
        .filter_map(|(name, have, want)| match (have, want) {
            (Some(h), Some(w)) if h < w => Some(format!("{name} {h} < {w}")),
            (None, Some(w)) => Some(format!("{name} absent (need {w})")),
            _ => None,
        })
        .collect();
    (!low.is_empty()).then(|| low.join(", "))
}

impl Policy {
    /// Appraises a report; `product` is the verified product if known.
    pub fn check(&self, r: &AttestationReport, product: Option<Product>) -> Vec<Check> {
        let mut out = Vec::new();
        let h = |b: &[u8]| hex::encode(b);
        if !self.measurements.is_empty() {
            let ok = self.measurements.iter().any(|m| m[..] == r.measurement[..]);
            out.push(check(
                "measurement",
                ok,
                h(&r.measurement),
                format!("{} is not an allowed measurement", h(&r.measurement)),
            ));
        }
        let exact = |out: &mut Vec<Check>, name: &str, want: &Option<Vec<u8>>, have: &[u8]| {
            if let Some(w) = want {
                out.push(check(
                    name,
                    w[..] == *have,
                    h(have),
                    format!("is {}, expected {}", h(have), h(w)),
                ));
            }
        };
        exact(&mut out, "report-data", &self.report_data, &r.report_data);
        exact(&mut out, "host-data", &self.host_data, &r.host_data);
        exact(&mut out, "family-id", &self.family_id, &r.family_id);
        exact(&mut out, "image-id", &self.image_id, &r.image_id);
        if let Some(n) = &self.nonce {
            out.push(check(
                "nonce",
                r.report_data.starts_with(n),
                format!("report_data starts with {}", h(n)),
                format!(
                    "report_data {} does not start with {}",
                    h(&r.report_data),
                    h(n)
                ),
            ));
        }
        let listed = |out: &mut Vec<Check>, name: &str, list: &[Vec<u8>], have: &[u8]| {
            if !list.is_empty() {
                let ok = list.iter().any(|x| x[..] == *have);
                out.push(check(
                    name,
                    ok,
                    h(have),
                    format!("{} is not in the allowed list", h(have)),
                ));
            }
        };
        listed(
            &mut out,
            "id-key-digest",
            &self.id_key_digests,
            &r.id_key_digest,
        );
        listed(
            &mut out,
            "author-key-digest",
            &self.author_key_digests,
            &r.author_key_digest,
        );
        if !self.chip_ids.is_empty() {
            let ok = self.chip_ids.iter().any(|c| {
                !c.is_empty()
                    && c.len() <= 64
                    && r.chip_id.starts_with(c)
                    && r.chip_id[c.len()..].iter().all(|&b| b == 0)
            });
            out.push(check(
                "chip-id-allowed",
                ok,
                h(&r.chip_id),
                format!("{} is not an allowed chip", h(&r.chip_id)),
            ));
        }
        if let Some(req) = self.require_author_key {
            out.push(check(
                "author-key",
                r.key_info.author_key_en == req,
                format!("AUTHOR_KEY_EN = {}", r.key_info.author_key_en),
                format!(
                    "AUTHOR_KEY_EN is {}, policy requires {req}",
                    r.key_info.author_key_en
                ),
            ));
        }
        if let Some(min) = self.min_guest_svn {
            out.push(check(
                "guest-svn",
                r.guest_svn >= min,
                format!("{} >= {min}", r.guest_svn),
                format!("{} < minimum {min}", r.guest_svn),
            ));
        }
        if let Some(v) = self.vmpl {
            out.push(check(
                "vmpl",
                r.vmpl == v,
                format!("{}", r.vmpl),
                format!("is {}, expected {v}", r.vmpl),
            ));
        }
        if let Some(k) = self.signing_key {
            out.push(check(
                "signing-key-allowed",
                r.key_info.signing_key == k,
                format!("{}", r.key_info.signing_key),
                format!(
                    "signed by the {}, policy allows only the {k}",
                    r.key_info.signing_key
                ),
            ));
        }
        if let Some(p) = self.product {
            out.push(check(
                "product-allowed",
                product == Some(p),
                format!("{p}"),
                format!(
                    "{}, policy requires {p}",
                    product.map_or("unknown".to_string(), |x| x.to_string())
                ),
            ));
        }
        if let Some(min) = &self.min_tcb {
            for (name, tcb) in [
                ("min-tcb-current", &r.current_tcb),
                ("min-tcb-committed", &r.committed_tcb),
                ("min-tcb-reported", &r.reported_tcb),
            ] {
                let below = tcb_below(min, tcb, product, r);
                out.push(check(
                    name,
                    below.is_none(),
                    tcb.raw_hex(),
                    below.unwrap_or_default(),
                ));
            }
        }
        if let Some(min) = &self.min_launch_tcb {
            let below = tcb_below(min, &r.launch_tcb, product, r);
            out.push(check(
                "min-tcb-launch",
                below.is_none(),
                r.launch_tcb.raw_hex(),
                below.unwrap_or_default(),
            ));
        }
        if let Some(b) = self.min_build {
            let have = r.current_version.build;
            out.push(check(
                "firmware-build",
                have >= b,
                format!("{have} >= {b}"),
                format!("{have} < minimum {b}"),
            ));
        }
        if let Some((maj, min)) = self.min_version {
            let v = r.current_version;
            let ok = (v.major, v.minor) >= (maj, min);
            out.push(check(
                "firmware-version",
                ok,
                format!("{v} >= {maj}.{min}"),
                format!("{v} < minimum {maj}.{min}"),
            ));
        }
        if let Some((maj, min)) = self.min_abi {
            let have = (r.policy.abi_major(), r.policy.abi_minor());
            out.push(check(
                "guest-policy-abi",
                have >= (maj, min),
                format!("{}.{} >= {maj}.{min}", have.0, have.1),
                format!(
                    "guest policy ABI {}.{} < minimum {maj}.{min}",
                    have.0, have.1
                ),
            ));
        }
        let bits =
            |out: &mut Vec<Check>, prefix: &str, list: &[(String, u32)], want: bool, value: u64| {
                for (name, bit) in list {
                    let set = (value >> bit) & 1 == 1;
                    let verb = if want { "required" } else { "forbidden" };
                    out.push(check(
                        &format!("{prefix}-{}", name.replace('_', "-")),
                        set == want,
                        format!("{name} = {set}"),
                        format!(
                            "{name} is {}, policy says {verb}",
                            if set { "set" } else { "clear" }
                        ),
                    ));
                }
            };
        bits(
            &mut out,
            "guest-policy",
            &self.guest_require,
            true,
            r.policy.0,
        );
        bits(
            &mut out,
            "guest-policy",
            &self.guest_forbid,
            false,
            r.policy.0,
        );
        bits(
            &mut out,
            "platform-info",
            &self.platform_require,
            true,
            r.platform_info.0,
        );
        bits(
            &mut out,
            "platform-info",
            &self.platform_forbid,
            false,
            r.platform_info.0,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v3 report of the given CPUID family with TCB bytes `tcb`.
    fn report(family: u8, tcb: [u8; 8]) -> AttestationReport {
        let mut b = vec![0u8; crate::report::REPORT_SIZE];
        b[0] = 3;
        b[8..16].copy_from_slice(&0xb0000u64.to_le_bytes());
        b[0x34] = 1;
        b[0x188] = family;
        for off in [0x38, 0x180, 0x1E0, 0x1F0] {
            b[off..off + 8].copy_from_slice(&tcb);
        }
        b[0x1E8..0x1EB].copy_from_slice(&[20, 55, 1]);
        AttestationReport::from_bytes(&b).expect("parses")
    }

    fn failed(p: &PolicyFile, r: &AttestationReport, product: Option<Product>) -> Vec<String> {
        p.compile()
            .expect("compiles")
            .check(r, product)
            .into_iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| c.name)
            .collect()
    }

    #[test]
    fn tcb_minimums_use_the_products_layout() {
        // Turin: [fmc, bl, tee, snp, 0, 0, 0, ucode].
        let r = report(0x1A, [1, 2, 3, 4, 0, 0, 0, 81]);
        let p = |t: TcbMinimum| PolicyFile {
            min_tcb: Some(t),
            ..Default::default()
        };
        let ok = TcbMinimum::parse("t", "fmc=1,bl=2,tee=3,snp=4,ucode=81").expect("tcb");
        assert!(failed(&p(ok), &r, Some(Product::Turin)).is_empty());
        let fmc = TcbMinimum::parse("t", "fmc=2").expect("tcb");
        assert_eq!(
            failed(&p(fmc.clone()), &r, Some(Product::Turin)),
            ["min-tcb-current", "min-tcb-committed", "min-tcb-reported"]
        );
        // Milan has no FMC: a minimum for it cannot be met.
        let m = report(0x19, [2, 0, 0, 0, 0, 0, 5, 68]);
        assert_eq!(failed(&p(fmc), &m, Some(Product::Milan)).len(), 3);
        let snp = TcbMinimum::parse("t", "snp=6").expect("tcb");
        assert_eq!(failed(&p(snp), &m, Some(Product::Milan)).len(), 3);
    }

    #[test]
    fn bits_versions_and_abi() {
        let r = report(0x19, [2, 0, 0, 0, 0, 0, 5, 68]);
        let p = PolicyFile {
            guest_policy: Some(BitRequirements {
                require: vec!["smt".into()],
                forbid: vec!["debug".into(), "migrate-ma".into()],
                min_abi: Some("0.0".into()),
            }),
            min_version: Some("1.55".into()),
            min_build: Some(21),
            ..Default::default()
        };
        assert_eq!(
            failed(&p, &r, Some(Product::Milan)),
            ["firmware-build", "guest-policy-debug"]
        );
    }

    #[test]
    fn toml_round_trip_and_errors() {
        let p = PolicyFile::from_toml(
            r#"
            measurements = ["00"]
            vmpl = 0
            signing_key = "vcek"
            [min_tcb]
            bootloader = 3
            [guest_policy]
            forbid = ["debug", "migrate-ma"]
            min_abi = "1.51"
            "#,
        )
        .expect("parses");
        assert_eq!(p.vmpl, Some(0));
        assert_eq!(p.signing_key, Some(SigningKey::Vcek));
        assert!(matches!(
            p.compile(),
            Err(PolicyError::DecodeHex {
                field: "measurements",
                ..
            })
        ));
        assert!(matches!(
            PolicyFile::from_toml("bogus = 1"),
            Err(PolicyError::ParseToml(_))
        ));
        let bad_bit = PolicyFile {
            guest_policy: Some(BitRequirements {
                forbid: vec!["debgu".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(matches!(
            bad_bit.compile(),
            Err(PolicyError::FindBitName { .. })
        ));
        assert_eq!(
            TcbMinimum::parse("t", "bl=3,tee=0,snp=8,ucode=115").map(|t| t.microcode),
            Ok(Some(115))
        );
        assert!(TcbMinimum::parse("t", "bl=300").is_err());
    }
}
