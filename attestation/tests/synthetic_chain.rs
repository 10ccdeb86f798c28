//! A complete chain made in the test (with the `openssl` command, since the
//! `openssl` crate cannot sign certificates with RSASSA-PSS) so that each
//! check can be made to fail *alone*: a test here fails if any single check
//! (pinning, chip binding, TCB binding, revocation, validity, PSS-only) is
//! removed from the verifier. Also exercises the `--certs DIR --trust-root`
//! contract the VMM's SNP model relies on.

use std::path::{Path, PathBuf};
use std::process::Command;

use openssl::asn1::{Asn1Integer, Asn1Object, Asn1OctetString, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::EcKey;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::x509::{X509Crl, X509CrlBuilder, X509Extension, X509RevokedBuilder};
use umbra_attestation::chain;
use umbra_attestation::hex;
use umbra_attestation::report::AttestationReport;
use umbra_attestation::verify::{self, Certificates, Options, Status, Verdict};

const CHIP: [u8; 64] = {
    let mut c = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        c[i] = (i as u8).wrapping_mul(7).wrapping_add(1);
        i += 1;
    }
    c
};
const TCB: [u8; 8] = [3, 0, 0, 0, 0, 0, 8, 115];
const MEASUREMENT: [u8; 48] = [0x5a; 48];

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command is installed (system OpenSSL 3)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const PSS: [&str; 5] = [
    "-sha384",
    "-sigopt",
    "rsa_padding_mode:pss",
    "-sigopt",
    "rsa_pss_saltlen:48",
];

/// Makes ARK, ASK and a VCEK (optionally PKCS#1 v1.5-signed) in `dir`.
fn make_chain(dir: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(
        dir.join("ca.ext"),
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
    )
    .expect("write");
    let ext = format!(
        "1.3.6.1.4.1.3704.1.1 = ASN1:INTEGER:0\n\
         1.3.6.1.4.1.3704.1.2 = ASN1:IA5STRING:Milan-B0\n\
         1.3.6.1.4.1.3704.1.3.1 = ASN1:INTEGER:{}\n\
         1.3.6.1.4.1.3704.1.3.2 = ASN1:INTEGER:{}\n\
         1.3.6.1.4.1.3704.1.3.3 = ASN1:INTEGER:{}\n\
         1.3.6.1.4.1.3704.1.3.8 = ASN1:INTEGER:{}\n\
         1.3.6.1.4.1.3704.1.4 = ASN1:FORMAT:HEX,OCTETSTRING:{}\n",
        TCB[0],
        TCB[1],
        TCB[6],
        TCB[7],
        hex::encode(&CHIP)
    );
    std::fs::write(dir.join("vcek.ext"), ext).expect("write");
    let mut a = vec![
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ark.key",
    ];
    a.extend(["-subj", "/CN=ARK-Milan", "-days", "3650", "-out", "ark.pem"]);
    a.extend(PSS);
    openssl(dir, &a);
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ask.key",
            "-subj",
            "/CN=SEV-Milan",
            "-out",
            "ask.csr",
        ],
    );
    let mut a = vec![
        "x509",
        "-req",
        "-in",
        "ask.csr",
        "-CA",
        "ark.pem",
        "-CAkey",
        "ark.key",
        "-set_serial",
        "2",
    ];
    a.extend(["-days", "3650", "-extfile", "ca.ext", "-out", "ask.pem"]);
    a.extend(PSS);
    openssl(dir, &a);
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "secp384r1",
            "-genkey",
            "-noout",
            "-out",
            "vcek.key",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "vcek.key",
            "-subj",
            "/CN=SEV-VCEK",
            "-out",
            "vcek.csr",
        ],
    );
    let mut a = vec![
        "x509",
        "-req",
        "-in",
        "vcek.csr",
        "-CA",
        "ask.pem",
        "-CAkey",
        "ask.key",
        "-set_serial",
        "0",
    ];
    a.extend(["-days", "365", "-extfile", "vcek.ext", "-out", "vcek.pem"]);
    a.extend(PSS);
    openssl(dir, &a);
    // The same VCEK signed with PKCS#1 v1.5 instead of PSS.
    let mut a = vec![
        "x509",
        "-req",
        "-in",
        "vcek.csr",
        "-CA",
        "ask.pem",
        "-CAkey",
        "ask.key",
        "-set_serial",
        "0",
    ];
    a.extend([
        "-days",
        "365",
        "-extfile",
        "vcek.ext",
        "-sha384",
        "-out",
        "vcek-pkcs1.pem",
    ]);
    openssl(dir, &a);
}

/// A version-3 Milan report with the given fields, signed by `vcek.key`.
fn make_report(dir: &Path, chip: &[u8; 64], tcb: [u8; 8], key_info: u32) -> Vec<u8> {
    let mut b = vec![0u8; 0x4A0];
    b[0..4].copy_from_slice(&3u32.to_le_bytes());
    b[8..16].copy_from_slice(&0x30000u64.to_le_bytes());
    b[0x34..0x38].copy_from_slice(&1u32.to_le_bytes());
    b[0x38..0x40].copy_from_slice(&tcb);
    b[0x48..0x4C].copy_from_slice(&key_info.to_le_bytes());
    b[0x50..0x54].copy_from_slice(b"nonc");
    b[0x90..0xC0].copy_from_slice(&MEASUREMENT);
    b[0x180..0x188].copy_from_slice(&tcb);
    b[0x188] = 0x19;
    b[0x189] = 0x01;
    b[0x18A] = 0x01;
    b[0x1A0..0x1E0].copy_from_slice(chip);
    b[0x1E0..0x1E8].copy_from_slice(&tcb);
    b[0x1F0..0x1F8].copy_from_slice(&tcb);
    let key = EcKey::private_key_from_pem(&std::fs::read(dir.join("vcek.key")).expect("key"))
        .expect("ec key");
    let digest = openssl::sha::sha384(&b[..0x2A0]);
    let sig = EcdsaSig::sign(&digest, &key).expect("sign");
    let mut r = sig.r().to_vec_padded(48).expect("r");
    let mut s = sig.s().to_vec_padded(48).expect("s");
    r.reverse();
    s.reverse();
    b[0x2A0..0x2A0 + 48].copy_from_slice(&r);
    b[0x2E8..0x2E8 + 48].copy_from_slice(&s);
    b
}

struct Synth {
    dir: PathBuf,
}

impl Synth {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("umbra-synth-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        make_chain(&dir);
        Synth { dir }
    }
    fn cert(&self, name: &str) -> openssl::x509::X509 {
        chain::load_cert(&std::fs::read(self.dir.join(name)).expect("read"), name).expect("cert")
    }
    fn verify(
        &self,
        report: &[u8],
        vek: &str,
        trusted: bool,
        at: i64,
        crl: Option<X509Crl>,
    ) -> Verdict {
        let report = AttestationReport::from_bytes(report).expect("report parses");
        let certs = Certificates {
            vek: self.cert(vek),
            vek_kind: None,
            intermediate: Some(self.cert("ask.pem")),
            ark: Some(self.cert("ark.pem")),
        };
        let opts = Options {
            at_unix: at,
            trust_roots: if trusted {
                vec![self.cert("ark.pem")]
            } else {
                vec![]
            },
            crl,
            product: None,
        };
        verify::verify(&report, &certs, &opts)
    }
    fn crl(&self, revoke_ask: bool, signer: &str) -> X509Crl {
        let ark = self.cert("ark.pem");
        let key = PKey::private_key_from_pem(&std::fs::read(self.dir.join(signer)).expect("key"))
            .expect("key");
        let mut b = X509CrlBuilder::new().expect("crl");
        b.set_issuer_name(ark.subject_name()).expect("issuer");
        b.set_last_update(&Asn1Time::days_from_now(0).expect("t"))
            .expect("last");
        b.set_next_update(&Asn1Time::days_from_now(30).expect("t"))
            .expect("next");
        if revoke_ask {
            let mut r = X509RevokedBuilder::new().expect("revoked");
            let serial = Asn1Integer::from_bn(&BigNum::from_u32(2).expect("bn")).expect("serial");
            r.set_serial_number(&serial).expect("serial");
            r.set_revocation_date(&Asn1Time::days_from_now(0).expect("t"))
                .expect("date");
            b.add_revoked(r.build()).expect("add");
        }
        // The builder insists on authorityKeyIdentifier and cRLNumber (RFC 5280 §5.2).
        let ski = ark
            .subject_key_id()
            .expect("ARK has a subject key id")
            .as_slice()
            .to_vec();
        let mut aki = vec![0x30, (ski.len() + 2) as u8, 0x80, ski.len() as u8];
        aki.extend_from_slice(&ski);
        for (oid, der) in [("2.5.29.35", aki), ("2.5.29.20", vec![0x02, 0x01, 0x01])] {
            let obj = Asn1Object::from_str(oid).expect("oid");
            let val = Asn1OctetString::new_from_bytes(&der).expect("octets");
            b.append_extension(X509Extension::new_from_der(&obj, false, &val).expect("ext"))
                .expect("append");
        }
        b.sign(&key, MessageDigest::sha384()).expect("sign crl");
        b.build().expect("build")
    }
}

impl Drop for Synth {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Names of the checks that failed.
fn failed(v: &Verdict) -> Vec<String> {
    v.checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.name.clone())
        .collect()
}

#[test]
fn each_check_fails_alone() {
    let s = Synth::new("alone");
    let good = make_report(&s.dir, &CHIP, TCB, 0);

    // Trusted explicitly: everything passes.
    let v = s.verify(&good, "vcek.pem", true, now(), None);
    assert!(v.passed(), "{:#?}", v.checks);

    // The trust root alone, without an ARK in the evidence, is the root.
    let report = AttestationReport::from_bytes(&good).expect("parses");
    let certs = Certificates {
        vek: s.cert("vcek.pem"),
        vek_kind: None,
        intermediate: Some(s.cert("ask.pem")),
        ark: None,
    };
    let opts = Options {
        at_unix: now(),
        trust_roots: vec![s.cert("ark.pem")],
        ..Default::default()
    };
    let v = verify::verify(&report, &certs, &opts);
    assert!(v.passed(), "{:#?}", v.checks);

    // Not one of AMD's roots and not named: only pinning fails.
    let v = s.verify(&good, "vcek.pem", false, now(), None);
    assert_eq!(failed(&v), ["ark-pinned"]);

    // Signed correctly, but for another chip: only the chip binding fails.
    let mut other = CHIP;
    other[5] ^= 1;
    let v = s.verify(
        &make_report(&s.dir, &other, TCB, 0),
        "vcek.pem",
        true,
        now(),
        None,
    );
    assert_eq!(failed(&v), ["chip-id"]);

    // Signed correctly, but at another TCB than the VCEK's: only TCB fails.
    let mut tcb = TCB;
    tcb[7] = 116;
    let v = s.verify(
        &make_report(&s.dir, &CHIP, tcb, 0),
        "vcek.pem",
        true,
        now(),
        None,
    );
    assert_eq!(failed(&v), ["tcb"]);

    // Judged two years on: only the VCEK (365 days) has expired.
    let v = s.verify(&good, "vcek.pem", true, now() + 2 * 365 * 86_400, None);
    assert_eq!(failed(&v), ["vcek-validity"]);

    // A VCEK signed with PKCS#1 v1.5 rather than RSASSA-PSS.
    let v = s.verify(&good, "vcek-pkcs1.pem", true, now(), None);
    assert_eq!(failed(&v), ["vcek-signature"]);

    // MASK_CHIP_KEY: CHIP_ID is zero; a warning, not a failure.
    let v = s.verify(
        &make_report(&s.dir, &[0; 64], TCB, 2),
        "vcek.pem",
        true,
        now(),
        None,
    );
    assert!(v.passed(), "{:#?}", v.checks);
    assert_eq!(v.check("chip-id").map(|c| c.status), Some(Status::Warn));
}

#[test]
fn revocation_against_a_crl() {
    let s = Synth::new("crl");
    let good = make_report(&s.dir, &CHIP, TCB, 0);
    let v = s.verify(
        &good,
        "vcek.pem",
        true,
        now(),
        Some(s.crl(false, "ark.key")),
    );
    assert!(v.passed(), "{:#?}", v.checks);
    assert_eq!(v.check("revocation").map(|c| c.status), Some(Status::Pass));

    let v = s.verify(&good, "vcek.pem", true, now(), Some(s.crl(true, "ark.key")));
    assert_eq!(failed(&v), ["revocation"]);
    assert!(v
        .check("revocation")
        .is_some_and(|c| c.detail.contains("revoked")));

    // A CRL not signed by the ARK is rejected, not trusted.
    let v = s.verify(
        &good,
        "vcek.pem",
        true,
        now(),
        Some(s.crl(false, "ask.key")),
    );
    assert_eq!(failed(&v), ["revocation"]);

    // Stale CRL (past nextUpdate): a warning.
    let v = s.verify(
        &good,
        "vcek.pem",
        true,
        now() + 60 * 86_400,
        Some(s.crl(false, "ark.key")),
    );
    assert_eq!(v.check("revocation").map(|c| c.status), Some(Status::Warn));
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_umbra-attest"))
        .args(args)
        .output()
        .expect("run umbra-attest");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The command line the VMM's SNP model uses.
#[test]
fn certs_dir_with_trust_root_contract() {
    let s = Synth::new("cli");
    std::fs::write(s.dir.join("report.bin"), make_report(&s.dir, &CHIP, TCB, 0)).expect("write");
    let d = s.dir.display().to_string();
    let report = format!("{d}/report.bin");
    let ark = format!("{d}/ark.pem");
    let m = hex::encode(&MEASUREMENT);
    let rd = hex::encode(b"nonc");
    let base = ["verify", "--report", &report, "--certs", &d];
    let (code, out, err) = cli(&[
        &base[..],
        &[
            "--trust-root",
            &ark,
            "--measurement",
            &m,
            "--report-data",
            &rd,
        ],
    ]
    .concat());
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ok   measurement") && out.contains("ok   report-data"),
        "{out}"
    );

    let (code, out, _) = cli(&base);
    assert_eq!(code, 4, "untrusted root is an authenticity failure: {out}");
    assert!(out.contains("FAIL ark-pinned"), "{out}");

    let wrong = hex::encode(&[0u8; 48]);
    let (code, out, _) =
        cli(&[&base[..], &["--trust-root", &ark, "--measurement", &wrong]].concat());
    assert_eq!(code, 1, "policy failure: {out}");
    assert!(out.contains("FAIL measurement"), "{out}");

    // A CRL in the directory that revokes the ASK.
    let crl = s.crl(true, "ark.key").to_der().expect("der");
    std::fs::write(s.dir.join("crl.der"), crl).expect("write");
    let (code, out, _) = cli(&[&base[..], &["--trust-root", &ark]].concat());
    assert_eq!(code, 4, "revoked ASK: {out}");
    assert!(out.contains("FAIL revocation"), "{out}");
    std::fs::remove_file(s.dir.join("crl.der")).expect("rm");

    let (code, out, _) = cli(&[&base[..], &["--trust-root", &ark, "--format", "json"]].concat());
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json output");
    assert_eq!(v["ok"], serde_json::Value::Bool(true));
    assert_eq!(
        v["report"]["measurement"],
        serde_json::Value::String(m.clone())
    );
}
