//! `umbra-agent evidence` and `umbra-agent verify`: one guest's evidence
//! for a peer, and the peer's check of it (mutual attestation).

use std::path::{Path, PathBuf};
use umbra_attestation::hex;
use umbra_attestation::policy::PolicyFile;
use umbra_attestation::verify::{describe, Status};
use umbra_guest_agent::kbs::EvidenceProvider;
use umbra_guest_agent::source::Deferred;

/// Exit code for unusable input (evidence, policy, a root), as
/// `umbra-attest verify` uses it.
const EXIT_INPUT: i32 = 3;

/// REPORT_DATA from hex (`--report-data`), zero-padded to 64 bytes.
pub fn report_data(text: &str) -> Result<[u8; 64], String> {
    let bytes = hex::decode(text.trim().trim_start_matches("0x"))
        .map_err(|e| format!("--report-data: {e}"))?;
    if bytes.len() > 64 {
        return Err("--report-data: more than 64 bytes".into());
    }
    let mut out = [0u8; 64];
    out[..bytes.len()].copy_from_slice(&bytes);
    Ok(out)
}

/// `evidence --report-data HEX --out FILE`.
pub fn write_evidence(data: &str, out: &Path, provider: &Deferred) -> i32 {
    let data = match report_data(data) {
        Ok(d) => d,
        Err(e) => {
            umbra_attestation::errln!("umbra-agent: {e}");
            return 2;
        }
    };
    let evidence = provider
        .evidence(&data)
        .map_err(|e| describe(e.as_ref()))
        .and_then(|(report, certs)| {
            umbra_attestation::kbs::evidence::snp_evidence(&report, &certs)
                .map_err(|e| describe(&e))
        });
    let evidence = match evidence {
        Ok(e) => e,
        Err(e) => {
            umbra_attestation::errln!("umbra-agent: cannot obtain evidence: {e}");
            return 1;
        }
    };
    if let Err(e) = std::fs::write(out, evidence.to_string()) {
        umbra_attestation::errln!("umbra-agent: cannot write {}: {e}", out.display());
        return 1;
    }
    umbra_attestation::outln!("evidence written to {}", out.display());
    0
}

/// `verify --evidence FILE --report-data HEX [--policy FILE] [--trust-root PEM]...`.
pub fn verify(
    evidence: &Path,
    report_data: &str,
    policy: Option<&Path>,
    trust_roots: &[PathBuf],
) -> i32 {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let inputs = (|| -> Result<_, String> {
        let bytes = read(evidence)?;
        let mut file = match policy {
            Some(p) => {
                let text = String::from_utf8(read(p)?)
                    .map_err(|_| format!("{}: not UTF-8 text", p.display()))?;
                PolicyFile::from_toml(&text)
                    .map_err(|e| format!("{}: {}", p.display(), describe(&e)))?
            }
            None => PolicyFile::default(),
        };
        // The nonce the peer must have bound: freshness, not only authenticity.
        file = file.merge(PolicyFile {
            report_data: Some(report_data_hex(report_data)?),
            ..PolicyFile::default()
        });
        let policy = if file.is_empty() {
            None
        } else {
            Some(file.compile().map_err(|e| describe(&e))?)
        };
        let roots = trust_roots
            .iter()
            .map(|p| {
                umbra_attestation::chain::load_cert(&read(p)?, &p.display().to_string())
                    .map_err(|e| describe(&e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((bytes, policy, roots))
    })();
    let (bytes, policy, roots) = match inputs {
        Ok(i) => i,
        Err(e) => {
            umbra_attestation::errln!("umbra-agent: {e}");
            return EXIT_INPUT;
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let checks = match umbra_guest_agent::peer::verify_peer(&bytes, policy.as_ref(), roots, now) {
        Ok(c) => c,
        Err(e) => {
            umbra_attestation::errln!("umbra-agent: {}", describe(&e));
            return EXIT_INPUT;
        }
    };
    for c in &checks {
        umbra_attestation::outln!("{}", c.line());
    }
    if checks.iter().any(|c| c.status == Status::Fail) {
        1
    } else {
        0
    }
}

/// `--report-data` as the policy's hex form (checked to be hex, at most
/// 64 bytes; the policy pads it).
fn report_data_hex(text: &str) -> Result<String, String> {
    report_data(text)?;
    Ok(text.trim().trim_start_matches("0x").to_lowercase())
}
