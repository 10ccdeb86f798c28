#![allow(clippy::unwrap_used)]
//! Guest messages to the SNP firmware model, as a guest sends them: the
//! VMPCK is read from the secrets page the model wrote, requests are sealed
//! with AES-256-GCM, and the report the model signs parses with the
//! attestation crate and verifies with its library (and the `umbra-attest`
//! CLI when built) against the model's ARK as `--trust-root`.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use umbra_attestation::chain;
use umbra_attestation::report::{AttestationReport, SigningKey};
use umbra_attestation::verify::{self, Certificates, Options, Status};
use umbra_snp_model::guest_msg::{
    self, GuestRequestError, KeyReq, KeyRsp, MsgHeader, ReportReq, ReportRsp, MSG_KEY_REQ,
    MSG_KEY_RSP, MSG_REPORT_REQ, MSG_REPORT_RSP,
};
use umbra_snp_model::keys::ModelKeys;
use umbra_snp_model::psp::{Platform, SnpFirmwareModel};
use umbra_vmm::backend::confidential::{FirmwareStatus, LaunchFinishParams, PageType};
use umbra_vmm::backend::snp_model::DirKeyStore;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

const RAM: u64 = 1 << 20;
const SECRETS_GPA: u64 = 0x3000;
const HOST_DATA: [u8; 32] = [0x5C; 32];

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("umbra-snp-model-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// One key directory for the whole test binary: RSA-4096 generation is slow.
fn keys() -> Arc<ModelKeys> {
    static KEYS: OnceLock<Arc<ModelKeys>> = OnceLock::new();
    KEYS.get_or_init(|| {
        Arc::new(ModelKeys::load_or_generate(&DirKeyStore::new(tmp("keys"))).unwrap())
    })
    .clone()
}

struct Guest {
    model: SnpFirmwareModel,
    vmpck0: [u8; 32],
    measurement: [u8; 48],
    seqno: u64,
}

fn launch(keys: Option<Arc<ModelKeys>>, normal_byte: u8) -> Guest {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
    let mut model = SnpFirmwareModel::new(&[(0, RAM)], keys, Platform::default()).unwrap();
    model.launch_start(0x30000, [0; 16]).unwrap();
    let code = [normal_byte; 4096];
    model
        .launch_update(0x1000, 4096, PageType::Normal, Some(&code), &mem)
        .unwrap();
    model
        .launch_update(SECRETS_GPA, 4096, PageType::Secrets, None, &mem)
        .unwrap();
    let measurement = model
        .launch_finish(&LaunchFinishParams {
            id_block: None,
            id_auth: None,
            auth_key_en: false,
            host_data: HOST_DATA,
            vmsa_pages: vec![vec![0; 4096]],
        })
        .unwrap();
    // The guest's view: VMPCK0 at offset 0x20 of the secrets page.
    let mut vmpck0 = [0u8; 32];
    mem.read_slice(&mut vmpck0, GuestAddress(SECRETS_GPA + 0x20))
        .unwrap();
    Guest {
        model,
        vmpck0,
        measurement,
        seqno: 0,
    }
}

impl Guest {
    /// Seals `payload` as the guest's next request (seqno + 1).
    fn request(&self, msg_type: u8, version: u8, payload: &[u8]) -> Box<[u8; 4096]> {
        let mut h = MsgHeader::new_zeroed();
        h.msg_seqno = self.seqno + 1;
        h.msg_type = msg_type;
        h.msg_version = version;
        h.msg_vmpck = 0;
        guest_msg::seal(&self.vmpck0, h, payload).unwrap()
    }

    /// Sends a request and checks the response header as Linux does.
    fn exchange(&mut self, msg_type: u8, version: u8, payload: &[u8]) -> Vec<u8> {
        let req = self.request(msg_type, version, payload);
        let out = self.model.guest_request(&req).unwrap();
        let (h, plain) = guest_msg::open(&self.vmpck0, &out.response).unwrap();
        assert_eq!(h.msg_seqno, self.seqno + 2, "response seqno = request + 1");
        assert_eq!(h.msg_type, msg_type + 1);
        assert_eq!(h.msg_version, version);
        self.seqno += 2;
        plain
    }

    fn report(&mut self, report_data: [u8; 64], vmpl: u32) -> ReportRsp {
        let mut req = ReportReq::new_zeroed();
        req.report_data = report_data;
        req.vmpl = vmpl;
        let plain = self.exchange(MSG_REPORT_REQ, 1, req.as_bytes());
        ReportRsp::read_from_bytes(&plain).unwrap()
    }

    fn key(&mut self, field_select: u64) -> KeyRsp {
        self.key_from(field_select, 0)
    }

    fn key_from(&mut self, field_select: u64, key_select: u32) -> KeyRsp {
        let mut req = KeyReq::new_zeroed();
        req.guest_field_select = field_select;
        req.key_select = key_select;
        let plain = self.exchange(MSG_KEY_REQ, 1, &req.as_bytes()[..0x20]);
        KeyRsp::read_from_bytes(&plain).unwrap()
    }
}

#[test]
fn report_parses_and_verifies_against_the_model_ark() {
    let keys = keys();
    let mut g = launch(Some(keys.clone()), 0x90);
    let nonce = [0xA5; 64];
    let rsp = g.report(nonce, 0);
    assert_eq!((rsp.status, rsp.report_size), (0, 0x4A0));
    let report = AttestationReport::from_bytes(&rsp.report).unwrap();
    assert_eq!(report.version, 3);
    assert_eq!(report.report_data, nonce);
    assert_eq!(report.measurement, g.measurement);
    assert_eq!(report.host_data, HOST_DATA);
    assert_eq!(report.policy.0, 0x30000);
    assert_eq!(report.chip_id, keys.chip_id());
    assert_eq!(report.key_info.signing_key, SigningKey::Vcek);
    let cpuid = report.cpuid.unwrap();
    assert_eq!(
        (cpuid.family, cpuid.model, cpuid.stepping),
        (0x19, 0x01, 0x01)
    );

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let certs = Certificates {
        vek: keys.vcek().clone(),
        vek_kind: None,
        intermediate: Some(keys.ask().clone()),
        ark: Some(keys.ark().clone()),
    };
    let opts = |trust: bool| Options {
        at_unix: now,
        trust_roots: if trust {
            vec![keys.ark().clone()]
        } else {
            vec![]
        },
        crl: None,
        product: None,
    };
    let verdict = verify::verify(&report, &certs, &opts(true));
    let failed: Vec<_> = verdict
        .checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    assert!(verdict.passed(), "failed checks: {failed:?}");
    // The model's root is not AMD's: without --trust-root it is refused.
    let verdict = verify::verify(&report, &certs, &opts(false));
    assert!(!verdict.passed());
    assert_eq!(
        verdict.check("ark-pinned").map(|c| c.status),
        Some(Status::Fail)
    );
    // The certificates carry AMD's profile.
    let ext = chain::VekExtensions::from_cert(keys.vcek(), "VCEK").unwrap();
    assert_eq!(ext.product_name.as_deref(), Some("Milan-B0"));
    assert_eq!(ext.hw_id.as_deref(), Some(&keys.chip_id()[..]));
    // As a KDS-issued Milan VCEK: SPL extensions .3.1-.3.8 all present and
    // the hwID extension value the raw 64 bytes (extnValue OCTET STRING of
    // length 64, no inner OCTET STRING).
    let der = keys.vcek().to_der().unwrap();
    let amd_oid = [0x2B, 0x06, 0x01, 0x04, 0x01, 0x9C, 0x78, 0x01];
    for spl in 1u8..=8 {
        let mut oid = vec![0x06, 10];
        oid.extend_from_slice(&amd_oid);
        oid.extend_from_slice(&[3, spl]);
        assert!(
            der.windows(oid.len()).any(|w| w == oid),
            "SPL extension .3.{spl}"
        );
    }
    let mut hwid = vec![0x06, 9];
    hwid.extend_from_slice(&amd_oid);
    hwid.push(4);
    hwid.extend_from_slice(&[0x04, 0x40]);
    hwid.extend_from_slice(&keys.chip_id());
    assert!(
        der.windows(hwid.len()).any(|w| w == hwid),
        "raw 64-byte hwID"
    );
    assert_eq!(chain::common_name(keys.ask()), "SEV-Milan");

    // The CLI, as a user runs it, when the binary has been built.
    let dir = tmp("cli");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, pem) in keys.certificates_pem().unwrap() {
        std::fs::write(dir.join(name), pem).unwrap();
    }
    std::fs::write(dir.join("report.bin"), rsp.report).unwrap();
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("umbra-attest"))
        .filter(|p| p.exists());
    match bin {
        Some(bin) => {
            let out = std::process::Command::new(bin)
                .arg("verify")
                .arg("--report")
                .arg(dir.join("report.bin"))
                .arg("--certs")
                .arg(&dir)
                .arg("--trust-root")
                .arg(dir.join("ark.pem"))
                .env("UMBRA_KDS_CACHE", "/nonexistent/umbra-test-cache")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "umbra-attest verify: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        None => eprintln!("skipped the CLI run: umbra-attest is not built"),
    }
}

#[test]
fn reloaded_key_directory_is_the_same_chip() {
    let keys = keys();
    let dir = std::path::PathBuf::from(keys.store());
    let again = ModelKeys::load_or_generate(&DirKeyStore::new(dir.clone())).unwrap();
    assert_eq!(again.chip_id(), keys.chip_id());
    assert_eq!(again.tcb(), keys.tcb());
    assert_eq!(
        again.vcek().to_der().unwrap(),
        keys.vcek().to_der().unwrap()
    );
    use std::os::unix::fs::PermissionsExt;
    for f in ["vcek.key", "ark.key", "ask.key"] {
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
}

#[test]
fn tampered_replayed_or_skipped_requests_are_refused() {
    let mut g = launch(None, 1);
    let mut req = ReportReq::new_zeroed();
    req.report_data = [1; 64];
    let page = g.request(MSG_REPORT_REQ, 1, req.as_bytes());
    // One flipped ciphertext bit.
    let mut bad = page.clone();
    bad[0x60 + 10] ^= 0x04;
    let e = g.model.guest_request(&bad).unwrap_err();
    assert_eq!(e, GuestRequestError::DecryptRequest(0));
    assert_eq!(e.status(), FirmwareStatus::InvalidParam);
    // A flipped tag bit.
    let mut bad = page.clone();
    bad[3] ^= 0x80;
    assert!(g.model.guest_request(&bad).is_err());
    // Sequence number 3 while 1 is expected (the sealed bytes are valid).
    g.seqno = 2;
    let skipped = g.request(MSG_REPORT_REQ, 1, req.as_bytes());
    assert_eq!(
        g.model.guest_request(&skipped).unwrap_err(),
        GuestRequestError::CheckSeqno {
            vmpck: 0,
            expected: 1,
            got: 3
        }
    );
    // The failures did not advance the counter: the original request works
    // and, unsigned without keys, reports signing key "none".
    g.seqno = 0;
    let rsp = g.report([1; 64], 0);
    assert_eq!(rsp.status, 0);
    let report = AttestationReport::from_bytes(&rsp.report).unwrap();
    assert_eq!(report.key_info.signing_key, SigningKey::None);
    // Replaying it now is refused.
    assert!(matches!(
        g.model.guest_request(&page).unwrap_err(),
        GuestRequestError::CheckSeqno { expected: 3, .. }
    ));
    // An unknown message type (MSG_CPUID_REQ) and a wrong payload size.
    assert!(g.model.guest_request(&g.request(1, 1, &[0; 16])).is_err());
    assert!(g
        .model
        .guest_request(&g.request(MSG_REPORT_REQ, 1, &[0; 0x50]))
        .is_err());
    // VMPL 4 is an error status inside a valid response.
    let rsp = g.report([0; 64], 4);
    assert_eq!(rsp.status, FirmwareStatus::InvalidParam as u32);
    assert_eq!(rsp.report_size, 0);
}

#[test]
fn derived_keys_are_deterministic_for_the_same_inputs() {
    let keys = keys();
    let measurement = 1 << 3;
    let mut a = launch(Some(keys.clone()), 7);
    let mut b = launch(Some(keys.clone()), 7);
    let mut c = launch(Some(keys.clone()), 8);
    let ka = a.key(measurement);
    assert_eq!(ka.status, 0);
    assert_ne!(ka.derived_key, [0; 32]);
    assert_eq!(a.key(measurement).derived_key, ka.derived_key);
    // Another launch of the same image on the same chip: the same key.
    assert_eq!(b.key(measurement).derived_key, ka.derived_key);
    // Another image: another key, unless the measurement is not selected.
    assert_ne!(c.key(measurement).derived_key, ka.derived_key);
    assert_eq!(c.key(0).derived_key, a.key(0).derived_key);
    assert_ne!(a.key(0).derived_key, ka.derived_key);
    // A field outside GUEST_FIELD_SELECT's defined bits.
    assert_eq!(a.key(1 << 9).status, FirmwareStatus::InvalidParam as u32);
    // KEY_SEL 0 ("VLEK if installed, else VCEK") and 1 (VCEK) are the same
    // key when no VLEK is installed; 2 (VLEK) is refused.
    let vcek = a.key_from(measurement, 1 << 1);
    assert_eq!(vcek.status, 0);
    assert_eq!(vcek.derived_key, a.key(measurement).derived_key);
    assert_eq!(
        a.key_from(measurement, 2 << 1).status,
        FirmwareStatus::InvalidKey as u32
    );
    let _ = MSG_KEY_RSP;
    let _ = MSG_REPORT_RSP;
}
