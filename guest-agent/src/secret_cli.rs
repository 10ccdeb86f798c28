//! `umbra-agent fetch-secret` and `derive-key`: the commands that end with
//! a secret in a file (0600, on tmpfs unless told otherwise).

use crate::{fail, SourceArgs};
use std::path::Path;
use umbra_guest_agent::sev_guest;

/// Exit codes of `fetch-secret`: the KBS clients' shared table
/// (documented in docs/attestation.md).
mod fetch_exit {
    use umbra_kbs_client::flow::exit;
    pub const UNREACHABLE: i32 = exit::UNREACHABLE as i32;
    pub const EVIDENCE: i32 = exit::EVIDENCE as i32;
    pub const REFUSED_AUTH: i32 = exit::REFUSED_AUTH as i32;
    pub const REFUSED_ATTEST: i32 = exit::REFUSED_ATTEST as i32;
    pub const REFUSED_POLICY: i32 = exit::REFUSED_POLICY as i32;
    pub const REFUSED_RESOURCE: i32 = exit::REFUSED_RESOURCE as i32;
    pub const PROTOCOL: i32 = exit::PROTOCOL as i32;
    pub const WRITE: i32 = exit::WRITE as i32;
}

/// What `fetch-secret` was asked for.
pub struct FetchArgs<'a> {
    pub kbs: &'a str,
    pub kbs_ca: Option<&'a Path>,
    pub resource: &'a str,
    pub out: &'a Path,
    pub allow_persistent: bool,
    pub source: &'a SourceArgs,
    pub init_data: Option<&'a Path>,
}

pub fn fetch_secret(args: FetchArgs<'_>) -> i32 {
    let FetchArgs {
        kbs,
        kbs_ca,
        resource,
        out,
        allow_persistent,
        source,
        init_data,
    } = args;
    use umbra_guest_agent::kbs::{self as client, Endpoint, FetchError};
    let endpoint = match (Endpoint::parse(kbs), kbs_ca) {
        (Some(Endpoint::Https { host, .. }), ca) => Endpoint::Https {
            host,
            ca: ca.map(Path::to_path_buf),
        },
        (Some(_), Some(_)) => {
            umbra_attestation::errln!("umbra-agent: --kbs-ca applies to an https:// KBS");
            return 2;
        }
        (Some(endpoint), None) => endpoint,
        (None, _) => {
            umbra_attestation::errln!(
                "umbra-agent: --kbs {kbs}: expected http://HOST:PORT, https://HOST:PORT or unix:PATH"
            );
            return 2;
        }
    };
    if !umbra_kbs_client::flow::resource_ok(resource) {
        umbra_attestation::errln!("umbra-agent: --resource {resource}: expected REPO/TYPE/TAG");
        return 2;
    }
    if refuse_persistent(out, allow_persistent, "secret") {
        return 2;
    }
    let mut seed = [0u8; 32];
    if getrandom::fill(&mut seed).is_err() {
        umbra_attestation::errln!("umbra-agent: no randomness for the session key");
        return fetch_exit::PROTOCOL;
    }
    let provider = source.deferred();
    let init_data = match init_data.map(std::fs::read_to_string).transpose() {
        Ok(text) => text,
        Err(e) => {
            umbra_attestation::errln!(
                "umbra-agent: --init-data {}: {e}",
                init_data
                    .map(Path::display)
                    .map(|d| d.to_string())
                    .unwrap_or_default()
            );
            return 2;
        }
    };
    match client::fetch_secret_with_init_data(
        &endpoint,
        resource,
        &provider,
        &seed,
        init_data.as_deref(),
    ) {
        Ok(secret) => write_secret(out, &secret),
        Err(err) => {
            let code = match &err {
                FetchError::Connect(_) | FetchError::Http(_) | FetchError::Tls(_) => {
                    fetch_exit::UNREACHABLE
                }
                FetchError::Evidence { .. } | FetchError::BuildEvidence(_) => fetch_exit::EVIDENCE,
                FetchError::Refused { step: "auth", .. } => fetch_exit::REFUSED_AUTH,
                FetchError::Refused {
                    status: 403,
                    step: "attest",
                    ..
                } => fetch_exit::REFUSED_POLICY,
                FetchError::Refused { step: "attest", .. } => fetch_exit::REFUSED_ATTEST,
                FetchError::Refused { .. } => fetch_exit::REFUSED_RESOURCE,
                FetchError::Protocol(_) | FetchError::NoCookie => fetch_exit::PROTOCOL,
            };
            fail(&err, code)
        }
    }
}

/// `derive-key`: the key through the device, written as a secret.
pub fn derive_key(
    request: &sev_guest::KeyRequest,
    out: &Path,
    allow_persistent: bool,
    device: &Path,
) -> i32 {
    if refuse_persistent(out, allow_persistent, "key") {
        return 2;
    }
    let key =
        sev_guest::SevGuest::open(device).and_then(|dev| sev_guest::derive_key(&dev, request));
    match key {
        Ok(key) => write_secret(out, &key),
        Err(e) => fail(&e, 1),
    }
}

/// Whether `out` must be refused: on a persistent filesystem without
/// `--allow-persistent` (one line says so).
fn refuse_persistent(out: &Path, allow_persistent: bool, what: &str) -> bool {
    let refused = !allow_persistent && umbra_guest_agent::kbs::is_persistent(out);
    if refused {
        umbra_attestation::errln!(
            "umbra-agent: {} is on a persistent filesystem; put the {what} on tmpfs or pass --allow-persistent",
            out.display()
        );
    }
    refused
}

/// Writes the secret 0600, never to the log.
fn write_secret(out: &Path, secret: &[u8]) -> i32 {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(out)
        .and_then(|mut f| {
            // `mode` applies to a new file only: an existing one is
            // narrowed to 0600 before a byte of the secret goes in.
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            f.write_all(secret)
        });
    match written {
        Ok(()) => {
            umbra_attestation::outln!(
                "secret written to {} ({} bytes)",
                out.display(),
                secret.len()
            );
            0
        }
        Err(err) => {
            umbra_attestation::errln!("umbra-agent: cannot write {}: {err}", out.display());
            fetch_exit::WRITE
        }
    }
}
