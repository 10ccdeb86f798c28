//! `umbra-attest id-block`: the ID block and ID auth structure for
//! SNP_LAUNCH_FINISH, and the key digests a policy expects.
//!
//! Output on stdout follows sev-snp-measure's `snp-create-id-block`:
//! `id-block=<b64>,id-auth=<b64>`, `id_key_hash: <b64>`, `author_key: <b64>`;
//! `-v` adds the digests in hex. Files are written when asked for.

use std::path::PathBuf;

use base64::Engine as _;
use clap::Args;

use umbra_attestation::id_block::{IdAuth, IdBlock, SigningKey, DEFAULT_POLICY};
use zerocopy::IntoBytes;

use super::measure::parse_auto_int;

#[derive(Args, Debug)]
pub struct IdBlockArgs {
    /// Expected launch digest: 96 hex digits or base64 (required).
    #[arg(long, value_name = "DIGEST")]
    measurement: Option<String>,
    /// ID private key, PEM (P-384) (required).
    #[arg(long, alias = "idkey", value_name = "PATH")]
    id_key: Option<PathBuf>,
    /// Author private key, PEM (P-384); without it the author fields stay zero.
    #[arg(long, alias = "authorkey", value_name = "PATH")]
    author_key: Option<PathBuf>,
    /// Family ID: 32 hex digits (default zero).
    #[arg(long, value_name = "HEX")]
    family_id: Option<String>,
    /// Image ID: 32 hex digits (default zero).
    #[arg(long, value_name = "HEX")]
    image_id: Option<String>,
    /// Guest SVN (default 0).
    #[arg(long, value_name = "N", default_value = "0")]
    guest_svn: String,
    /// Guest policy; must equal the launch policy (default 0x30000).
    #[arg(long, value_name = "VALUE")]
    policy: Option<String>,
    /// Directory to write id_block.bin and id_auth.bin into.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// File to write the 96-byte ID block to.
    #[arg(long, value_name = "PATH")]
    id_block_out: Option<PathBuf>,
    /// File to write the 4096-byte ID auth structure to.
    #[arg(long, value_name = "PATH")]
    id_auth_out: Option<PathBuf>,
    /// Also print the key digests in hex.
    #[arg(short, long)]
    verbose: bool,
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().strip_prefix("0x").unwrap_or(s.trim());
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

fn parse_digest(s: &str) -> Result<[u8; 48], String> {
    let bytes = if s.trim().len() == 96 {
        decode_hex(s)
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .ok()
    };
    bytes
        .and_then(|b| <[u8; 48]>::try_from(b).ok())
        .ok_or_else(|| format!("invalid --measurement '{s}': expected 48 bytes as hex or base64"))
}

fn parse_id(flag: &str, s: Option<&str>) -> Result<[u8; 16], String> {
    match s {
        None => Ok([0; 16]),
        Some(v) => decode_hex(v)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .ok_or_else(|| format!("invalid {flag} '{v}': expected 32 hex digits")),
    }
}

fn load_key(flag: &str, path: &PathBuf) -> Result<SigningKey, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read {flag} file '{}': {e}", path.display()))?;
    SigningKey::from_pem(&pem).map_err(|e| {
        let mut msg = format!("{flag} '{}': {e}", path.display());
        if let Some(src) = std::error::Error::source(&e) {
            let first = src.to_string();
            if !first.is_empty() {
                msg.push_str(&format!(": {first}"));
            }
        }
        msg
    })
}

fn write(path: &PathBuf, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write '{}': {e}", path.display()))
}

fn execute(a: &IdBlockArgs) -> Result<(), String> {
    let ld = parse_digest(
        a.measurement
            .as_deref()
            .ok_or("the following arguments are required: --measurement")?,
    )?;
    let id_path = a
        .id_key
        .as_ref()
        .ok_or("the following arguments are required: --id-key")?;
    let family = parse_id("--family-id", a.family_id.as_deref())?;
    let image = parse_id("--image-id", a.image_id.as_deref())?;
    let svn = parse_auto_int(&a.guest_svn)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| format!("invalid --guest-svn '{}'", a.guest_svn))?;
    let policy = match &a.policy {
        None => DEFAULT_POLICY,
        Some(p) => parse_auto_int(p).ok_or_else(|| format!("invalid --policy '{p}'"))?,
    };
    let id_key = load_key("--id-key", id_path)?;
    let author_key = a
        .author_key
        .as_ref()
        .map(|p| load_key("--author-key", p))
        .transpose()?;

    let block = IdBlock::new(ld, family, image, svn, policy);
    let auth = IdAuth::sign(&block, &id_key, author_key.as_ref()).map_err(|e| e.to_string())?;

    let block_out = a
        .id_block_out
        .clone()
        .or_else(|| a.out_dir.as_ref().map(|d| d.join("id_block.bin")));
    let auth_out = a
        .id_auth_out
        .clone()
        .or_else(|| a.out_dir.as_ref().map(|d| d.join("id_auth.bin")));
    if let Some(d) = &a.out_dir {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create '{}': {e}", d.display()))?;
    }
    if let Some(p) = &block_out {
        write(p, block.as_bytes())?;
    }
    if let Some(p) = &auth_out {
        write(p, auth.as_bytes())?;
    }

    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    umbra_attestation::outln!(
        "id-block={},id-auth={}",
        b64(block.as_bytes()),
        b64(auth.as_bytes())
    );
    umbra_attestation::outln!("id_key_hash: {}", b64(&auth.id_key_digest()));
    umbra_attestation::outln!("author_key: {}", b64(&auth.author_key_digest()));
    if a.verbose {
        umbra_attestation::outln!("id_key_digest_hex: {}", hex(&auth.id_key_digest()));
        umbra_attestation::outln!("author_key_digest_hex: {}", hex(&auth.author_key_digest()));
    }
    Ok(())
}

/// Runs `umbra-attest id-block`; returns the exit code.
pub fn run(args: IdBlockArgs) -> i32 {
    match execute(&args) {
        Ok(()) => 0,
        Err(msg) => {
            umbra_attestation::errln!("Error: {msg}");
            1
        }
    }
}
