//! umbra-agent's `/dev/sev-guest` path against a model of the driver: the
//! "kernel" here does what drivers/virt/coco/sev-guest does — it puts the
//! uapi request into a guest message encrypted with VMPCK0 (the same
//! `umbra_firmware::guest_msg` code the firmware uses), hands it to the SNP
//! firmware model, and copies the decrypted MSG_REPORT_RSP / MSG_KEY_RSP
//! back, with the host's certificate table for SNP_GET_EXT_REPORT and the
//! INVALID_LEN retry when it does not fit. Only the kernel is replaced:
//! the report the agent gets is signed by the model and verifies against
//! the model's ARK.
#![allow(clippy::unwrap_used)]

use std::sync::{Mutex, OnceLock};
use umbra_firmware::guest_msg::{self, MSG_KEY_REQ, MSG_REPORT_REQ};
use umbra_guest_agent::cert_table;
use umbra_guest_agent::sev_guest::{
    self, Device, DeviceError, KeyRequest, Request, RootKey, SevGuestError, REPORT_RESP_SIZE,
};
use umbra_snp_model::keys::ModelKeys;
use umbra_snp_model::psp::{Platform, SnpFirmwareModel};
use umbra_vmm::backend::confidential::{LaunchFinishParams, PageType};
use umbra_vmm::backend::snp_model::DirKeyStore;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const RAM: u64 = 1 << 20;
const SECRETS_GPA: u64 = 0x2000;

fn keys() -> std::sync::Arc<ModelKeys> {
    static KEYS: OnceLock<std::sync::Arc<ModelKeys>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("umbra-sev-guest-keys-{}", std::process::id()));
        std::sync::Arc::new(ModelKeys::load_or_generate(&DirKeyStore::new(dir)).unwrap())
    })
    .clone()
}

/// The driver: a launched model, VMPCK0 from its secrets page, the
/// sequence number, and the host's certificate table.
struct ModelDriver {
    model: Mutex<SnpFirmwareModel>,
    vmpck0: [u8; 32],
    seqno: Mutex<u64>,
    table: Vec<u8>,
    requests: Mutex<Vec<&'static str>>,
}

impl ModelDriver {
    fn new(table: Vec<u8>) -> Self {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
        let mut model =
            SnpFirmwareModel::new(&[(0, RAM)], Some(keys()), Platform::default()).unwrap();
        model.launch_start(0x30000, [0; 16]).unwrap();
        model
            .launch_update(0x1000, 4096, PageType::Normal, Some(&[0x5a; 4096]), &mem)
            .unwrap();
        model
            .launch_update(SECRETS_GPA, 4096, PageType::Secrets, None, &mem)
            .unwrap();
        model
            .launch_finish(&LaunchFinishParams {
                id_block: None,
                id_auth: None,
                auth_key_en: false,
                host_data: [0; 32],
                vmsa_pages: vec![vec![0; 4096]],
            })
            .unwrap();
        let mut vmpck0 = [0u8; 32];
        mem.read_slice(&mut vmpck0, GuestAddress(SECRETS_GPA + 0x20))
            .unwrap();
        ModelDriver {
            model: Mutex::new(model),
            vmpck0,
            seqno: Mutex::new(0),
            table,
            requests: Mutex::new(Vec::new()),
        }
    }

    /// One guest message round trip: `payload` of `msg_type` in, the
    /// decrypted response body out (what the kernel copies to resp_data).
    fn message(&self, msg_type: u8, payload: &[u8]) -> Result<Vec<u8>, DeviceError> {
        let mut seqno = self.seqno.lock().unwrap();
        let mut page = [0u8; 4096];
        guest_msg::seal(&self.vmpck0, *seqno + 1, msg_type, 0, payload, &mut page).unwrap();
        let outcome = self
            .model
            .lock()
            .unwrap()
            .guest_request(&page)
            .map_err(|e| DeviceError {
                fw_error: e.code(),
                vmm_error: 0,
                errno: std::io::Error::from_raw_os_error(libc_eio()),
            })?;
        let mut response = *outcome.response;
        let (_, body) = guest_msg::open(&self.vmpck0, 0, *seqno + 2, &mut response).unwrap();
        *seqno += 2;
        Ok(body.to_vec())
    }
}

fn libc_eio() -> i32 {
    5 // EIO: what the driver returns when the firmware refused
}

impl Device for ModelDriver {
    fn request(&self, request: Request<'_>) -> Result<(), DeviceError> {
        self.requests.lock().unwrap().push(match &request {
            Request::Report { .. } => "report",
            Request::ExtReport { .. } => "ext-report",
            Request::DerivedKey { .. } => "derived-key",
        });
        match request {
            Request::Report { req, resp } => {
                let body =
                    self.message(MSG_REPORT_REQ, &guest_msg::report_request(&req.user_data))?;
                resp[..body.len()].copy_from_slice(&body);
                Ok(())
            }
            Request::ExtReport {
                req,
                certs,
                certs_needed,
                resp,
            } => {
                // sev-guest.c: certs_len above SEV_FW_BLOB_MAX_SIZE or not
                // whole pages is EINVAL before anything is asked.
                if certs.len() > 16 << 10 || certs.len() % 4096 != 0 {
                    return Err(DeviceError {
                        fw_error: 0,
                        vmm_error: 0,
                        errno: std::io::Error::from_raw_os_error(22),
                    });
                }
                if certs.len() < self.table.len() {
                    *certs_needed = self.table.len() as u32;
                    return Err(DeviceError {
                        fw_error: 0,
                        vmm_error: sev_guest::VMM_ERR_INVALID_LEN,
                        errno: std::io::Error::from_raw_os_error(22),
                    });
                }
                certs[..self.table.len()].copy_from_slice(&self.table);
                let body =
                    self.message(MSG_REPORT_REQ, &guest_msg::report_request(&req.user_data))?;
                resp[..body.len()].copy_from_slice(&body);
                Ok(())
            }
            Request::DerivedKey { req, resp } => {
                // The uapi struct is the MSG_KEY_REQ payload, byte for byte.
                let mut payload = Vec::new();
                payload.extend(req.root_key_select.to_le_bytes());
                payload.extend(req.rsvd.to_le_bytes());
                payload.extend(req.guest_field_select.to_le_bytes());
                payload.extend(req.vmpl.to_le_bytes());
                payload.extend(req.guest_svn.to_le_bytes());
                payload.extend(req.tcb_version.to_le_bytes());
                let body = self.message(MSG_KEY_REQ, &payload)?;
                resp[..body.len()].copy_from_slice(&body);
                Ok(())
            }
        }
    }
}

/// The model's VCEK, ASK and ARK as a host's table, with `filler` bytes
/// of an entry whose GUID nobody knows.
fn table(filler: usize) -> Vec<u8> {
    use cert_table::CertKind;
    let k = keys();
    let (vcek, ask, ark) = (
        k.vcek().to_der().unwrap(),
        k.ask().to_der().unwrap(),
        k.ark().to_der().unwrap(),
    );
    let filler = vec![0xee; filler];
    let certs: [(CertKind, &[u8]); 4] = [
        (CertKind::Vcek, &vcek),
        (CertKind::Ask, &ask),
        (CertKind::Ark, &ark),
        (CertKind::Other([9; 16]), &filler),
    ];
    let mut table = vec![0u8; umbra_snp_abi::cert_table::table_len(&certs)];
    umbra_snp_abi::cert_table::write(&certs, &mut table).unwrap();
    table
}

#[test]
fn reports_come_signed_and_bound_through_both_ioctls() {
    let driver = ModelDriver::new(table(1000));
    let plain = sev_guest::get_report(&driver, b"plain nonce", None, false).unwrap();
    assert_eq!(&plain.parsed.report_data[..11], b"plain nonce");
    assert!(plain.certificates.is_empty());
    // Extended: the agent offers the kernel's whole 16 KiB buffer at once.
    let ext = sev_guest::get_report(&driver, b"ext nonce", None, true).unwrap();
    assert_eq!(*driver.requests.lock().unwrap(), ["report", "ext-report"]);
    let entries = cert_table::parse(&ext.certificates).unwrap();
    assert_eq!(entries.len(), 4);
    assert_eq!(entries[3].1.len(), 1000);
    // The report verifies with those certificates against the model's ARK.
    let certs: Vec<_> = entries.iter().map(|(k, d)| (*k, d.to_vec())).collect();
    let certificates = umbra_attestation::kbs::evidence::certificates(
        &certs,
        &[],
        ext.parsed.key_info.signing_key,
    )
    .unwrap();
    let verdict = umbra_attestation::verify::verify(
        &ext.parsed,
        &certificates,
        &umbra_attestation::verify::Options {
            at_unix: 1_900_000_000,
            trust_roots: vec![keys().ark().clone()],
            ..Default::default()
        },
    );
    let failed: Vec<_> = verdict
        .checks
        .iter()
        .filter(|c| c.status == umbra_attestation::verify::Status::Fail)
        .map(|c| c.line())
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ext.provider.contains("/dev/sev-guest"));
}

/// How a [`Hostile`] driver answers.
type Answer = Box<dyn Fn(Request<'_>) -> Result<(), DeviceError> + Send + Sync>;

/// A driver that answers with what it is told to, for the hostile cases.
struct Hostile(Answer);

impl Device for Hostile {
    fn request(&self, request: Request<'_>) -> Result<(), DeviceError> {
        (self.0)(request)
    }
}

#[test]
fn what_the_host_or_firmware_gets_wrong_is_refused() {
    // A host whose table is larger than the kernel passes (16 KiB): one
    // request, then the size it needs, not a retry the kernel refuses.
    let big = ModelDriver::new(table(20 << 10));
    match sev_guest::get_report(&big, b"n", None, true) {
        Err(SevGuestError::CertsTooLarge(needed)) => assert!(needed > 20 << 10, "{needed}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(*big.requests.lock().unwrap(), ["ext-report"]);
    // A firmware error comes back with its code.
    let refused = Hostile(Box::new(|_| {
        Err(DeviceError {
            fw_error: 0x16,
            vmm_error: 0,
            errno: std::io::Error::from_raw_os_error(5),
        })
    }));
    let err = sev_guest::get_report(&refused, b"n", None, false).unwrap_err();
    assert!(
        matches!(err, SevGuestError::Request { fw_error: 0x16, .. }),
        "{err}"
    );
    // A response whose status or size is not a report's.
    let bad_size = Hostile(Box::new(|r| {
        if let Request::Report { resp, .. } = r {
            resp[4..8].copy_from_slice(&1000u32.to_le_bytes());
        }
        Ok(())
    }));
    assert!(matches!(
        sev_guest::get_report(&bad_size, b"n", None, false),
        Err(SevGuestError::ReportSize(1000))
    ));
    // A replayed report: another guest's REPORT_DATA.
    let driver = ModelDriver::new(Vec::new());
    let stale = std::sync::Arc::new(Mutex::new(vec![0u8; REPORT_RESP_SIZE]));
    sev_guest::get_report(&driver, b"old nonce", None, false).unwrap();
    let old = {
        let mut resp = Box::new([0u8; REPORT_RESP_SIZE]);
        driver
            .request(Request::Report {
                req: &sev_guest::ReportReq {
                    user_data: [1; 64],
                    vmpl: 0,
                    rsvd: [0; 28],
                },
                resp: &mut resp,
            })
            .unwrap();
        resp
    };
    stale.lock().unwrap().copy_from_slice(&old[..]);
    let replay = Hostile(Box::new(move |r| {
        if let Request::Report { resp, .. } = r {
            resp.copy_from_slice(&stale.lock().unwrap());
        }
        Ok(())
    }));
    assert!(matches!(
        sev_guest::get_report(&replay, b"fresh nonce", None, false),
        Err(SevGuestError::ReportDataMismatch)
    ));
}

#[test]
fn derived_keys_depend_on_what_they_bind() {
    let driver = ModelDriver::new(Vec::new());
    let key = |fields, root| {
        sev_guest::derive_key(
            &driver,
            &KeyRequest {
                root,
                fields,
                vmpl: 0,
                guest_svn: 0,
                tcb_version: 0,
            },
        )
    };
    let measured = key(sev_guest::FIELD_MEASUREMENT, RootKey::Vcek).unwrap();
    assert_eq!(
        measured,
        key(sev_guest::FIELD_MEASUREMENT, RootKey::Vcek).unwrap(),
        "stable"
    );
    assert_ne!(
        measured,
        key(0, RootKey::Vcek).unwrap(),
        "the field selection is mixed in"
    );
    assert_ne!(measured, [0; 32]);
    // A relaunch of the same image on the same chip (the same model keys)
    // measures the same and derives the same key.
    let again = ModelDriver::new(Vec::new());
    let same = sev_guest::derive_key(
        &again,
        &KeyRequest {
            root: RootKey::Vcek,
            fields: sev_guest::FIELD_MEASUREMENT,
            vmpl: 0,
            guest_svn: 0,
            tcb_version: 0,
        },
    )
    .unwrap();
    assert_eq!(
        measured, same,
        "sealing survives a relaunch of the same image"
    );
}
