//! The SNP extended guest request (GHCB spec 56421 §4.1.8, NAE
//! 0x8000_0012): a guest request that also asks the host for the
//! certificates that verify the report. RAX is the guest-physical address
//! of shared pages for the certificate table, RBX their number. If the
//! table does not fit, the request is not run: SW_EXITINFO2 says
//! SNP_GUEST_VMM_ERR_INVALID_LEN and RBX the pages needed (Linux
//! sev-guest's retry with a larger buffer; KVM's snp_handle_ext_guest_req).
//! The table is the host's configuration, like KVM's certificate blob:
//! under the model, the model's own VCEK, ASK and ARK.

use super::SnpRuntime;

/// `SNP_GUEST_ERR(SNP_GUEST_VMM_ERR_INVALID_LEN, 0)` (Linux uapi
/// sev-guest.h): the certificate buffer is too small.
const VMM_ERR_INVALID_LEN: u64 = 1 << 32;
/// `SNP_GUEST_ERR(SNP_GUEST_VMM_ERR_GENERIC, 0)`.
const VMM_ERR_GENERIC: u64 = 0xFFFF_FFFF << 32;
/// Most certificate pages a guest may name (KVM caps the blob at 16 KiB
/// times a few; nothing umbra serves is near it).
const MAX_CERT_PAGES: u64 = 64;

/// What the extended request answers: SW_EXITINFO2, and RBX when it
/// changes (the pages the table needs).
pub(super) struct ExtendedOutcome {
    pub status: u64,
    pub pages_needed: Option<u64>,
}

impl SnpRuntime {
    /// Sets the certificate table the host hands out (empty: none).
    pub fn set_certificates(&mut self, table: Vec<u8>) {
        self.certificates = table;
    }

    /// Runs the extended request: the table into the guest's pages, then
    /// the guest request itself.
    pub(super) fn ext_guest_request(
        &mut self,
        vcpu: usize,
        (request_gpa, response_gpa): (u64, u64),
        certs_gpa: u64,
        pages: u64,
    ) -> ExtendedOutcome {
        let needed = (self.certificates.len() as u64).div_ceil(4096);
        if pages < needed {
            return ExtendedOutcome {
                status: VMM_ERR_INVALID_LEN,
                pages_needed: Some(needed),
            };
        }
        if certs_gpa & 0xFFF != 0 || pages > MAX_CERT_PAGES {
            log::debug!("vCPU {vcpu}: certificate buffer {certs_gpa:#x}+{pages} pages refused");
            return ExtendedOutcome {
                status: VMM_ERR_GENERIC,
                pages_needed: None,
            };
        }
        // No certificates: an all-zero first entry, the empty table.
        let table = if self.certificates.is_empty() {
            vec![0u8; umbra_snp_abi::cert_table::ENTRY_SIZE]
        } else {
            self.certificates.clone()
        };
        if self.shared.write(certs_gpa, &table).is_err() {
            log::debug!("vCPU {vcpu}: certificate pages at {certs_gpa:#x} are not shared RAM");
            return ExtendedOutcome {
                status: VMM_ERR_GENERIC,
                pages_needed: None,
            };
        }
        let status = self.guest_request(vcpu, request_gpa, response_gpa);
        if let Some((_, used)) = &mut self.mapping_check {
            used.certs = Some((certs_gpa, pages));
        }
        ExtendedOutcome {
            status,
            pages_needed: None,
        }
    }
}
