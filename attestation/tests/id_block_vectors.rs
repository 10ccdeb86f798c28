//! ID block / ID auth against `$UMBRA_VECTORS/launch-measurement/idblock_cases.json`.
//! ECDSA signatures are randomized: the deterministic parts (ID block bytes,
//! key encodings and digests, the assembled auth block) are compared with the
//! vectors and the signatures are verified.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use serde_json::Value;
use umbra_attestation::id_block::{EcdsaSignature, IdAuth, IdBlock, SigningKey};
use zerocopy::{FromBytes, IntoBytes};

fn vectors() -> Option<PathBuf> {
    common::launch_vectors()
}

fn cases(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("idblock_cases.json"))
        .unwrap_or_else(|e| panic!("reading idblock_cases.json: {e}"));
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing: {e}"));
    v["cases"].as_array().cloned().unwrap_or_default()
}

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

fn key(dir: &Path, rel: &str) -> SigningKey {
    let pem = std::fs::read(dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    SigningKey::from_pem(&pem).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn arr<const N: usize>(v: Vec<u8>) -> [u8; N] {
    v.try_into().unwrap_or_else(|_| panic!("wrong length"))
}

#[test]
fn id_blocks_and_key_digests_match() {
    let Some(dir) = vectors() else { return };
    let mut checked = 0;
    for c in cases(&dir) {
        let inp = &c["inputs"];
        let exp = &c["expected"];
        let Some(ld_hex) = inp["launch_digest_hex"].as_str() else {
            continue;
        };
        let policy = inp["policy"].as_str().unwrap_or("0x30000");
        let block = IdBlock::new(
            arr(unhex(ld_hex)),
            arr(unhex(inp["family_id"].as_str().unwrap_or_default())),
            arr(unhex(inp["image_id"].as_str().unwrap_or_default())),
            inp["guest_svn"].as_u64().unwrap_or(0) as u32,
            u64::from_str_radix(policy.trim_start_matches("0x"), 16).unwrap_or(0),
        );
        let name = c["name"].as_str().unwrap_or("?");
        assert_eq!(
            block.as_bytes(),
            b64(exp["id_block_b64"].as_str().unwrap_or_default()).as_slice(),
            "{name}"
        );
        let id = key(&dir, inp["id_key"].as_str().unwrap_or_default());
        let author = key(&dir, inp["author_key"].as_str().unwrap_or_default());
        let id_pub = id.public_key().unwrap_or_else(|e| panic!("{e}"));
        let author_pub = author.public_key().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            id_pub.digest().to_vec(),
            unhex(exp["id_key_digest_hex"].as_str().unwrap_or_default()),
            "{name}"
        );
        let author_hex = exp["author_key_digest_hex"]
            .as_str()
            .or(exp["auth_key_digest_hex"].as_str())
            .unwrap_or_default();
        assert_eq!(author_pub.digest().to_vec(), unhex(author_hex), "{name}");

        let auth = IdAuth::sign(&block, &id, Some(&author)).unwrap_or_else(|e| panic!("{e}"));
        auth.verify(&block)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            auth.id_key_digest().to_vec(),
            unhex(exp["id_key_digest_hex"].as_str().unwrap_or_default())
        );
        assert_eq!(auth.author_key_digest().to_vec(), unhex(author_hex));
        // A signature over another block must not verify.
        let mut other = block.clone();
        other.guest_svn ^= 1;
        assert!(auth.verify(&other).is_err(), "{name}");
        checked += 1;
    }
    assert_eq!(checked, 2);
}

#[test]
fn auth_block_assembles_byte_identical() {
    let Some(dir) = vectors() else { return };
    let m = dir.join("virtee-sev-measurement");
    let read = |n: &str| std::fs::read(m.join(n)).unwrap_or_else(|e| panic!("{n}: {e}"));
    let id_sig = EcdsaSignature::read_from_bytes(&read("test_id_sig.bin"))
        .unwrap_or_else(|_| panic!("id sig size"));
    let auth_sig = EcdsaSignature::read_from_bytes(&read("test_auth_sig.bin"))
        .unwrap_or_else(|_| panic!("auth sig size"));
    let id = key(&dir, "virtee-sev-measurement/test_id_key.pem");
    let author = key(&dir, "virtee-sev-measurement/test_auth_key.pem");
    let auth = IdAuth::assemble(
        id_sig,
        id.public_key().unwrap_or_else(|e| panic!("{e}")),
        auth_sig,
        author.public_key().unwrap_or_else(|e| panic!("{e}")),
    );
    let expected = read("test_auth_block.bin");
    assert_eq!(auth.as_bytes(), expected.as_slice());
    let parsed = IdAuth::from_slice(&expected).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(parsed, auth);
    // The recorded ID-key signature was made by the author key.
    parsed
        .author_key
        .verify(parsed.id_key.as_bytes(), &parsed.id_key_sig, "ID key")
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn cli_writes_files_and_prints_snp_create_id_block_format() {
    let Some(dir) = vectors() else { return };
    let c = &cases(&dir)[0];
    let inp = &c["inputs"];
    let exp = &c["expected"];
    let out_dir = std::env::temp_dir().join(format!("umbra-idblock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    let out = Command::new(env!("CARGO_BIN_EXE_umbra-attest"))
        .current_dir(&dir)
        .args(["id-block", "--measurement"])
        .arg(inp["launch_digest_hex"].as_str().unwrap_or_default())
        .args(["--id-key", inp["id_key"].as_str().unwrap_or_default()])
        .args([
            "--author-key",
            inp["author_key"].as_str().unwrap_or_default(),
        ])
        .arg("--out-dir")
        .arg(&out_dir)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3);
    let (block_part, auth_part) = lines[0]
        .split_once(',')
        .unwrap_or_else(|| panic!("{}", lines[0]));
    assert_eq!(
        block_part,
        format!(
            "id-block={}",
            exp["id_block_b64"].as_str().unwrap_or_default()
        )
    );
    assert_eq!(
        lines[1],
        format!(
            "id_key_hash: {}",
            exp["id_key_digest_b64"].as_str().unwrap_or_default()
        )
    );
    assert_eq!(
        lines[2],
        format!(
            "author_key: {}",
            exp["author_key_digest_b64"].as_str().unwrap_or_default()
        )
    );
    let auth_b64 = auth_part
        .strip_prefix("id-auth=")
        .unwrap_or_else(|| panic!("{auth_part}"));
    let auth = IdAuth::from_slice(&b64(auth_b64)).unwrap_or_else(|e| panic!("{e}"));
    let block_file = std::fs::read(out_dir.join("id_block.bin")).unwrap_or_else(|e| panic!("{e}"));
    let auth_file = std::fs::read(out_dir.join("id_auth.bin")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        block_file,
        b64(exp["id_block_b64"].as_str().unwrap_or_default())
    );
    assert_eq!(auth_file, auth.as_bytes());
    let block = IdBlock::from_slice(&block_file).unwrap_or_else(|e| panic!("{e}"));
    auth.verify(&block).unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(&out_dir);
}

#[test]
fn cli_rejects_bad_input_with_one_line() {
    let Some(dir) = vectors() else { return };
    let tmp = std::env::temp_dir().join(format!("umbra-idblock-bad-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap_or_else(|e| panic!("{e}"));
    // A P-256 key: valid PEM, wrong curve.
    let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
        .unwrap_or_else(|e| panic!("{e}"));
    let p256 = openssl::ec::EcKey::generate(&group).unwrap_or_else(|e| panic!("{e}"));
    let p256_pem = tmp.join("p256.pem");
    std::fs::write(&p256_pem, p256.private_key_to_pem().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    let id_key = dir.join("sev-snp-measure-keyfile/id_key_test.pem");
    let ld = "00".repeat(48);
    let p256_s = p256_pem.to_string_lossy().into_owned();
    let id_s = id_key.to_string_lossy().into_owned();
    let bad: Vec<Vec<&str>> = vec![
        vec!["--measurement", "zz", "--id-key", &id_s],
        vec!["--measurement", &ld, "--id-key", "/nonexistent.pem"],
        vec!["--measurement", &ld, "--id-key", &p256_s],
        vec!["--measurement", &ld, "--id-key", "/etc/hostname"],
        vec![
            "--measurement",
            &ld,
            "--id-key",
            &id_s,
            "--family-id",
            "1234",
        ],
        vec!["--measurement", &ld],
    ];
    for args in &bad {
        let out = Command::new(env!("CARGO_BIN_EXE_umbra-attest"))
            .arg("id-block")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("Error: "), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
