//! Report parsing and verification against the real SEV-SNP vectors in
//! `$UMBRA_VECTORS` (see MANIFEST.md and EXPECTED.json there). Expected
//! values come from EXPECTED.json, decoded independently of this crate.
//! When UMBRA_VECTORS is unset the tests print a skip reason and return.

mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;
use umbra_attestation::chain::{self, VekExtensions, VekKind};
use umbra_attestation::hex;
use umbra_attestation::report::{AttestationReport, Product, ReportError, SigningKey};
use umbra_attestation::time::parse_rfc3339;
use umbra_attestation::verify::{self, Certificates, Options, Status, Verdict};

fn vectors() -> Option<PathBuf> {
    common::vectors()
}

fn read(dir: &Path, rel: &str) -> Vec<u8> {
    let p = dir.join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn expected(dir: &Path) -> serde_json::Map<String, Value> {
    let v: Value =
        serde_json::from_slice(&read(dir, "EXPECTED.json")).expect("EXPECTED.json parses");
    v["cases"].as_object().expect("cases").clone()
}

/// "milan-virtee-sev/report_milan.hex (hex text)" names the file first.
fn report_path(case: &Value) -> String {
    let f = case["report_file"].as_str().expect("report_file");
    f.split(' ').next().unwrap_or(f).to_string()
}

fn load_report(dir: &Path, case: &Value) -> AttestationReport {
    AttestationReport::from_any(&read(dir, &report_path(case))).expect("report parses")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A time inside the VEK's validity: now if it is valid now, otherwise a
/// day after notBefore (the expired AWS VLEK).
fn time_inside(case: &Value) -> i64 {
    let nb =
        parse_rfc3339(case["vek_cert"]["not_before"].as_str().expect("nb")).expect("nb parses");
    let na = parse_rfc3339(case["vek_cert"]["not_after"].as_str().expect("na")).expect("na parses");
    let t = now();
    if (nb..=na).contains(&t) {
        t
    } else {
        nb + 86_400
    }
}

fn hexfield(v: &Value) -> String {
    v.as_str()
        .expect("hex string")
        .trim_start_matches("0x")
        .to_string()
}

fn int(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().expect("u64"),
        Value::String(s) => u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex int"),
        _ => panic!("not an integer: {v}"),
    }
}

fn verify_case(dir: &Path, case: &Value, at: i64) -> (AttestationReport, Verdict) {
    let report = load_report(dir, case);
    let vek = chain::load_cert(&read(dir, case["vek_file"].as_str().expect("vek")), "vek")
        .expect("vek loads");
    let kind = match case["signing_key_type"].as_str() {
        Some("VLEK") => VekKind::Vlek,
        _ => VekKind::Vcek,
    };
    let certs = Certificates {
        vek,
        vek_kind: Some(kind),
        intermediate: None,
        ark: None,
    };
    let opts = Options {
        at_unix: at,
        ..Default::default()
    };
    let v = verify::verify(&report, &certs, &opts);
    (report, v)
}

fn status(v: &Verdict, name: &str) -> Status {
    v.check(name)
        .map(|c| c.status)
        .unwrap_or_else(|| panic!("no check {name}: {v:#?}"))
}

#[test]
fn every_report_parses_to_the_expected_fields() {
    let Some(dir) = vectors() else { return };
    let cases = expected(&dir);
    assert!(cases.len() >= 20, "EXPECTED.json has {} cases", cases.len());
    for (name, case) in &cases {
        let r = load_report(&dir, case);
        let e = &case["report"];
        let layout = if case["product"] == "turin" {
            Product::Turin.tcb_layout()
        } else {
            Product::Milan.tcb_layout()
        };
        assert_eq!(u64::from(r.version), int(&e["version"]), "{name} version");
        assert_eq!(
            u64::from(r.guest_svn),
            int(&e["guest_svn"]),
            "{name} guest_svn"
        );
        assert_eq!(r.policy.0, int(&e["policy"]), "{name} policy");
        assert_eq!(
            hex::encode(&r.family_id),
            hexfield(&e["family_id"]),
            "{name}"
        );
        assert_eq!(hex::encode(&r.image_id), hexfield(&e["image_id"]), "{name}");
        assert_eq!(u64::from(r.vmpl), int(&e["vmpl"]), "{name} vmpl");
        assert_eq!(
            u64::from(r.signature_algo),
            int(&e["signature_algo"]),
            "{name}"
        );
        assert_eq!(
            r.platform_info.0,
            int(&e["platform_info"]),
            "{name} platform_info"
        );
        assert_eq!(
            u64::from(r.key_info.raw),
            int(&e["key_info"]),
            "{name} key_info"
        );
        assert_eq!(
            u64::from(r.key_info.author_key_en),
            int(&e["author_key_en"]),
            "{name}"
        );
        assert_eq!(
            u64::from(r.key_info.mask_chip_key),
            int(&e["mask_chip_key"]),
            "{name}"
        );
        assert_eq!(
            r.key_info.signing_key.to_string(),
            e["signing_key"].as_str().unwrap_or(""),
            "{name}"
        );
        for (field, bytes) in [
            ("report_data", &r.report_data[..]),
            ("measurement", &r.measurement[..]),
            ("host_data", &r.host_data[..]),
            ("id_key_digest", &r.id_key_digest[..]),
            ("author_key_digest", &r.author_key_digest[..]),
            ("report_id", &r.report_id[..]),
            ("report_id_ma", &r.report_id_ma[..]),
            ("chip_id", &r.chip_id[..]),
        ] {
            assert_eq!(hex::encode(bytes), hexfield(&e[field]), "{name} {field}");
        }
        for (field, tcb) in [
            ("current_tcb", &r.current_tcb),
            ("reported_tcb", &r.reported_tcb),
            ("committed_tcb", &r.committed_tcb),
            ("launch_tcb", &r.launch_tcb),
        ] {
            let want = &e[field];
            if want.is_null() {
                continue;
            }
            assert_eq!(tcb.raw_hex(), hexfield(&want["raw"]), "{name} {field}");
            let p = tcb.parts(layout);
            assert_eq!(
                u64::from(p.bootloader),
                int(&want["bootloader"]),
                "{name} {field} bl"
            );
            assert_eq!(u64::from(p.tee), int(&want["tee"]), "{name} {field} tee");
            assert_eq!(u64::from(p.snp), int(&want["snp"]), "{name} {field} snp");
            assert_eq!(
                u64::from(p.microcode),
                int(&want["microcode"]),
                "{name} {field} ucode"
            );
            if let Some(fmc) = want.get("fmc") {
                assert_eq!(p.fmc.map(u64::from), Some(int(fmc)), "{name} {field} fmc");
            }
        }
        if let Some(v) = e.get("current_version") {
            assert_eq!(
                r.current_version.to_string(),
                v.as_str().unwrap_or(""),
                "{name}"
            );
            assert_eq!(
                r.committed_version.to_string(),
                e["committed_version"].as_str().unwrap_or(""),
                "{name}"
            );
        }
        if let Some(f) = e.get("cpuid_fam_id") {
            let c = r.cpuid.expect("v3+ has cpuid");
            assert_eq!(u64::from(c.family), int(f), "{name} family");
            assert_eq!(u64::from(c.model), int(&e["cpuid_mod_id"]), "{name} model");
            assert_eq!(u64::from(c.stepping), int(&e["cpuid_step"]), "{name} step");
        }
        if let Some(m) = e.get("launch_mit_vector") {
            assert_eq!(r.launch_mit_vector, Some(int(m)), "{name}");
            assert_eq!(
                r.current_mit_vector,
                Some(int(&e["current_mit_vector"])),
                "{name}"
            );
        }
        let strip = |s: &str| {
            s.trim_start_matches("0x")
                .trim_start_matches('0')
                .to_string()
        };
        assert_eq!(
            strip(&hex::encode(&r.sig_r)),
            strip(e["sig_r"].as_str().unwrap_or("")),
            "{name} r"
        );
        assert_eq!(
            strip(&hex::encode(&r.sig_s)),
            strip(e["sig_s"].as_str().unwrap_or("")),
            "{name} s"
        );
        let digest = openssl::sha::sha384(r.signed_bytes());
        assert_eq!(
            hex::encode(&digest),
            hexfield(&e["sha384_signed_region"]),
            "{name} signed region"
        );
    }
}

#[test]
fn vek_extensions_match_expected() {
    let Some(dir) = vectors() else { return };
    for (name, case) in expected(&dir) {
        let e = &case["vek_cert"];
        let cert = chain::load_cert(&read(&dir, case["vek_file"].as_str().expect("vek")), "vek")
            .expect("loads");
        assert_eq!(
            chain::fingerprint(&cert),
            hexfield(&e["sha256_der"]),
            "{name} fingerprint"
        );
        let x = VekExtensions::from_cert(&cert, "vek").expect("extensions parse");
        assert_eq!(x.struct_version, Some(int(&e["structVersion"])), "{name}");
        assert_eq!(
            x.product_name.as_deref(),
            e["productName"].as_str(),
            "{name}"
        );
        assert_eq!(x.bl_spl.map(u64::from), Some(int(&e["blSPL"])), "{name} bl");
        assert_eq!(
            x.tee_spl.map(u64::from),
            Some(int(&e["teeSPL"])),
            "{name} tee"
        );
        assert_eq!(
            x.snp_spl.map(u64::from),
            Some(int(&e["snpSPL"])),
            "{name} snp"
        );
        assert_eq!(
            x.ucode_spl.map(u64::from),
            Some(int(&e["ucodeSPL"])),
            "{name} ucode"
        );
        assert_eq!(
            x.fmc_spl.map(u64::from),
            e.get("fmcSPL").map(int),
            "{name} fmc"
        );
        match e.get("hwID") {
            Some(h) => assert_eq!(
                x.hw_id.as_deref().map(hex::encode),
                Some(hexfield(h)),
                "{name} hwID"
            ),
            None => assert!(x.hw_id.is_none(), "{name}: VLEK has no hwID"),
        }
        if let Some(csp) = e.get("cspID") {
            let got = x.csp_id.as_deref().unwrap_or("");
            assert!(
                csp.as_str()
                    .is_some_and(|c| c.contains(got) && !got.is_empty()),
                "{name} cspID {got}"
            );
        }
        // Validity boundaries from EXPECTED.json, not from OpenSSL's reading.
        let nb = parse_rfc3339(e["not_before"].as_str().expect("nb")).expect("nb");
        let na = parse_rfc3339(e["not_after"].as_str().expect("na")).expect("na");
        assert!(chain::check_validity(&cert, "vek", nb).is_ok(), "{name}");
        assert!(chain::check_validity(&cert, "vek", na).is_ok(), "{name}");
        assert!(matches!(
            chain::check_validity(&cert, "vek", nb - 1),
            Err(chain::ChainError::CheckNotYetValid { .. })
        ));
        assert!(matches!(
            chain::check_validity(&cert, "vek", na + 1),
            Err(chain::ChainError::CheckExpired { .. })
        ));
    }
}

#[test]
fn positive_cases_verify_with_embedded_roots() {
    let Some(dir) = vectors() else { return };
    let mut n = 0;
    for (name, case) in expected(&dir) {
        if case["expect_report_signature_valid"] != Value::Bool(true) {
            continue;
        }
        let (_, v) = verify_case(&dir, &case, time_inside(&case));
        assert!(v.passed(), "{name}: {:#?}", v.checks);
        let want = Product::from_name(case["product"].as_str().unwrap_or("")).expect("product");
        assert_eq!(v.product, Some(want), "{name}");
        for check in ["report-signature", "ark-pinned", "tcb"] {
            assert_eq!(status(&v, check), Status::Pass, "{name} {check}");
        }
        let chip = if case["signing_key_type"] == "VLEK" {
            Status::Skip
        } else {
            Status::Pass
        };
        assert_eq!(status(&v, "chip-id"), chip, "{name}");
        n += 1;
    }
    assert_eq!(n, 14, "MANIFEST lists 14 verifying report/VEK pairs");
}

#[test]
fn negative_cases_fail_for_the_right_reason() {
    let Some(dir) = vectors() else { return };
    let mut n = 0;
    for (name, case) in expected(&dir) {
        if case["expect_report_signature_valid"] != Value::Bool(false) {
            continue;
        }
        let (r, v) = verify_case(&dir, &case, time_inside(&case));
        assert!(!v.passed(), "{name} must fail");
        assert_eq!(status(&v, "report-signature"), Status::Fail, "{name}");
        // The chain itself is AMD's and intact in every report negative.
        assert_eq!(status(&v, "ark-pinned"), Status::Pass, "{name}");
        let cert = &case["vek_cert"];
        let tcb_matches = r.reported_tcb.parts(Product::Milan.tcb_layout()).bootloader as u64
            == int(&cert["blSPL"]);
        let want_tcb = if tcb_matches {
            Status::Pass
        } else {
            Status::Fail
        };
        assert_eq!(status(&v, "tcb"), want_tcb, "{name}: TCB outcome");
        if let Some(h) = cert.get("hwID") {
            let want_chip = if hexfield(h) == hex::encode(&r.chip_id) {
                Status::Pass
            } else {
                Status::Fail
            };
            assert_eq!(status(&v, "chip-id"), want_chip, "{name}: chip outcome");
        }
        n += 1;
    }
    assert_eq!(n, 7, "7 negative report cases");
}

#[test]
fn expired_vlek_fails_today_and_passes_at_a_historical_time() {
    let Some(dir) = vectors() else { return };
    let cases = expected(&dir);
    let case = &cases["trustee-milan-vlek-aws"];
    let (_, v) = verify_case(
        &dir,
        case,
        parse_rfc3339("2026-01-01T00:00:00Z").expect("t"),
    );
    assert_eq!(status(&v, "vlek-validity"), Status::Fail);
    assert!(v
        .check("vlek-validity")
        .is_some_and(|c| c.detail.contains("expired")));
    let (_, v) = verify_case(
        &dir,
        case,
        parse_rfc3339("2025-06-01T00:00:00Z").expect("t"),
    );
    assert!(v.passed(), "{:#?}", v.checks);
    // Before the VCEK was issued.
    let (_, v) = verify_case(
        &dir,
        &cases["gosevguest-milan"],
        parse_rfc3339("2021-01-01T00:00:00Z").expect("t"),
    );
    assert_eq!(status(&v, "vcek-validity"), Status::Fail);
}

fn verify_with(
    report: &AttestationReport,
    vek: &[u8],
    inter: Option<&[u8]>,
    ark: Option<&[u8]>,
    roots: Vec<openssl::x509::X509>,
) -> Verdict {
    let certs = Certificates {
        vek: chain::load_cert(vek, "vek").expect("vek"),
        vek_kind: None,
        intermediate: inter.map(|b| chain::load_cert(b, "inter").expect("inter")),
        ark: ark.map(|b| chain::load_cert(b, "ark").expect("ark")),
    };
    let opts = Options {
        at_unix: parse_rfc3339("2025-06-01T00:00:00Z").expect("t"),
        trust_roots: roots,
        ..Default::default()
    };
    verify::verify(report, &certs, &opts)
}

#[test]
fn tampered_and_mismatched_certificates_are_rejected() {
    let Some(dir) = vectors() else { return };
    let r2 =
        AttestationReport::from_any(&read(&dir, "milan-virtee-sev/report_milan.hex")).expect("r2");
    let r3 = AttestationReport::from_bytes(&read(&dir, "milan-trustee-vcek/test-report.bin"))
        .expect("r3");
    // Tampered VCEK bodies: the ASK -> VCEK link fails.
    for (report, file) in [
        (&r2, "negative/virtee-sev_vcek_milan_byte40_xorFF.der"),
        (&r3, "negative/trustee_test-vcek_byte42_plus1.der"),
        (&r3, "milan-trustee-vcek/test-vcek-invalid-legacy.der"),
        (&r3, "milan-trustee-vcek/test-vcek-invalid-new.der"),
    ] {
        let v = verify_with(report, &read(&dir, file), None, None, vec![]);
        assert_eq!(status(&v, "vcek-signature"), Status::Fail, "{file}");
    }
    // The hwID edited to 00..3f in both encodings (raw and OCTET STRING).
    for file in [
        "milan-trustee-vcek/test-vcek-invalid-legacy.der",
        "milan-trustee-vcek/test-vcek-invalid-new.der",
    ] {
        let x = VekExtensions::from_der(&read(&dir, file), file).expect("parses");
        assert_eq!(x.hw_id, Some((0u8..64).collect::<Vec<_>>()), "{file}");
        let v = verify_with(&r3, &read(&dir, file), None, None, vec![]);
        assert_eq!(status(&v, "report-signature"), Status::Fail, "{file}");
        assert_eq!(status(&v, "chip-id"), Status::Fail, "{file}");
    }

    // Milan VCEK under the Genoa ASK.
    let r10 = AttestationReport::from_bytes(&read(
        &dir,
        "ms-tee-attestation-verification/tests_test_data/milan_attestation_report.bin",
    ))
    .expect("r10");
    let vcek10 = read(
        &dir,
        "ms-tee-attestation-verification/tests_test_data/milan_vcek.pem",
    );
    let v = verify_with(
        &r10,
        &vcek10,
        Some(&read(&dir, "amd-roots/virtee-sev/genoa/ask.pem")),
        None,
        vec![],
    );
    assert_eq!(status(&v, "ask-product"), Status::Fail);
    assert_eq!(status(&v, "ask-signature"), Status::Fail);
    assert!(!v.passed());

    // The Milan ASK offered as the ARK: not pinned, not self-signed.
    let milan_ask = read(&dir, "amd-roots/virtee-sev/milan/ask.pem");
    let v = verify_with(&r10, &vcek10, None, Some(&milan_ask), vec![]);
    assert_eq!(status(&v, "ark-pinned"), Status::Fail);
    assert_eq!(status(&v, "ark-signature"), Status::Fail);
    // Naming it with --trust-root pins it, but it still is no self-signed root.
    let ask_cert = chain::load_cert(&milan_ask, "ask").expect("ask");
    let v = verify_with(&r10, &vcek10, None, Some(&milan_ask), vec![ask_cert]);
    assert_eq!(status(&v, "ark-pinned"), Status::Pass);
    assert!(!v.passed());

    // A VLEK under the VCEK's ASK (SEV-Milan) instead of the ASVK.
    let rv = AttestationReport::from_bytes(&read(&dir, "milan-trustee-vlek/test-vlek-report.bin"))
        .expect("rv");
    let v = verify_with(
        &rv,
        &read(&dir, "milan-trustee-vlek/test-vlek.der"),
        Some(&milan_ask),
        None,
        vec![],
    );
    assert_eq!(status(&v, "asvk-product"), Status::Fail);
    assert_eq!(status(&v, "vlek-signature"), Status::Fail);
    // The VLEK offered as if it were a VCEK.
    let certs = Certificates {
        vek: chain::load_cert(&read(&dir, "milan-trustee-vlek/test-vlek.der"), "v").expect("v"),
        vek_kind: Some(VekKind::Vcek),
        intermediate: None,
        ark: None,
    };
    let v = verify::verify(
        &rv,
        &certs,
        &Options {
            at_unix: parse_rfc3339("2025-06-01").expect("t"),
            ..Default::default()
        },
    );
    assert_eq!(status(&v, "signing-key"), Status::Fail);

    // The virtee/sev Turin VCEK (another chip) with the Turin report.
    let r9 = AttestationReport::from_bytes(&read(
        &dir,
        "ms-tee-attestation-verification/tests_test_data/turin_attestation_report.bin",
    ))
    .expect("r9");
    let v = verify_with(
        &r9,
        &read(&dir, "turin-virtee-sev-vcek/vcek_turin.der"),
        None,
        None,
        vec![],
    );
    assert_eq!(status(&v, "report-signature"), Status::Fail);
    assert_eq!(status(&v, "chip-id"), Status::Fail);
    assert_eq!(status(&v, "ark-pinned"), Status::Pass);

    // KDS bundles and the other published copies of the roots are the same
    // certificates as the embedded ones.
    for (bundle, product) in [
        ("amd-roots/go-sev-guest/ask_ark_milan.pem", Product::Milan),
        ("amd-roots/go-sev-guest/ask_ark_genoa.pem", Product::Genoa),
        (
            "amd-roots/go-sev-guest/ask_ark_turin_vcek.pem",
            Product::Turin,
        ),
    ] {
        let certs = chain::load_certs(&read(&dir, bundle), bundle).expect("bundle");
        assert_eq!(certs.len(), 2, "{bundle}");
        assert!(
            chain::check_ark_pinned(&certs[1], product, &[]).is_ok(),
            "{bundle}"
        );
        assert!(
            chain::check_ark_pinned(&certs[1], Product::ALL[(product as usize + 1) % 3], &[])
                .is_err()
        );
    }
    for p in ["milan", "genoa", "turin"] {
        let f = format!("amd-roots/ms-tee-attestation-verification/{p}_ark.pem");
        let ark = chain::load_cert(&read(&dir, &f), &f).expect("ark");
        assert!(
            chain::check_ark_pinned(&ark, Product::from_name(p).expect("p"), &[]).is_ok(),
            "{f}"
        );
    }
}

#[test]
fn siena_maps_to_genoa_and_product_conflicts_are_named() {
    let Some(dir) = vectors() else { return };
    let cases = expected(&dir);
    let case = &cases["trustee-e2e-genoa(siena)"];
    let r = load_report(&dir, case);
    assert_eq!(r.cpuid.map(|c| c.model), Some(0xA0));
    assert_eq!(r.product_from_cpuid(), Some(Product::Genoa));
    // A Genoa report with a Milan VCEK: product conflict, named as such.
    let milan = chain::load_cert(&read(&dir, "milan-gosevguest/vcek.der"), "v").expect("v");
    let x = VekExtensions::from_cert(&milan, "v").expect("x");
    assert!(matches!(
        verify::determine_product(&r, Some(&x), None, None),
        Err(verify::VerifyError::MatchProduct { .. })
    ));
}

#[test]
fn malformed_reports_are_precise_errors() {
    let Some(dir) = vectors() else { return };
    let good = read(&dir, "milan-gosevguest/attestation.bin");
    assert_eq!(
        AttestationReport::from_bytes(&good[..1000]),
        Err(ReportError::CheckSize(1000))
    );
    let mut big = good.clone();
    big.push(0);
    assert_eq!(
        AttestationReport::from_bytes(&big),
        Err(ReportError::CheckSize(1185))
    );
    let mut v9 = good.clone();
    v9[0] = 9;
    assert_eq!(
        AttestationReport::from_bytes(&v9),
        Err(ReportError::CheckVersion(9))
    );
    let mut alg = good.clone();
    alg[0x34] = 2;
    assert_eq!(
        AttestationReport::from_bytes(&alg),
        Err(ReportError::CheckSignatureAlgorithm(2))
    );
    let mut res = good.clone();
    res[0x4C] = 1;
    assert!(matches!(
        AttestationReport::from_bytes(&res),
        Err(ReportError::CheckReserved { offset: 0x4C, .. })
    ));
    // A certificate is not a report, and a report is not a certificate.
    assert!(AttestationReport::from_any(&read(&dir, "milan-gosevguest/vcek.der")).is_err());
    assert!(chain::load_cert(&good, "report").is_err());
    let unsigned = {
        let mut b = good.clone();
        b[0x48] = 7 << 2;
        AttestationReport::from_bytes(&b).expect("parses")
    };
    assert_eq!(unsigned.key_info.signing_key, SigningKey::None);
    let v = verify_with(
        &unsigned,
        &read(&dir, "milan-gosevguest/vcek.der"),
        None,
        None,
        vec![],
    );
    assert_eq!(status(&v, "signing-key"), Status::Fail);
}

#[test]
fn a_vek_naming_an_unknown_product_is_not_taken_for_milan() {
    let Some(dir) = vectors() else { return };
    // A version-2 report carries no CPUID: only certificates name a product.
    let r = AttestationReport::from_bytes(&read(&dir, "milan-gosevguest/attestation.bin"))
        .expect("report");
    assert_eq!(r.cpuid, None);
    let vcek = chain::load_cert(&read(&dir, "milan-gosevguest/vcek.der"), "v").expect("v");
    let mut x = VekExtensions::from_cert(&vcek, "v").expect("x");
    let ask_pem = read(&dir, "amd-roots/virtee-sev/milan/ask.pem");
    let ask = chain::load_cert(&ask_pem, "ask").expect("ask");
    // The real productName decides; with an intermediate named SEV-Milan too.
    assert_eq!(
        verify::determine_product(&r, Some(&x), Some(&ask), None),
        Ok(Product::Milan)
    );
    // A productName no one knows is refused, not taken for the intermediate's.
    x.product_name = Some("Venice-A0".into());
    assert!(matches!(
        verify::determine_product(&r, Some(&x), Some(&ask), None),
        Err(verify::VerifyError::FindProduct(why)) if why.contains("Venice-A0")
    ));
}
