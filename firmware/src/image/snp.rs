//! The SNP scenarios: `attest`, `psc` and `private-read`. They speak the
//! GHCB MSR protocol and the GHCB-page guest request as an SNP guest does
//! (see `ghcb`), through the model's paravirtual VMGEXIT (see `platform`).

use crate::exceptions::{self, VECTOR_VC};
use crate::ghcb::{self, negotiate, psc};
use crate::mem::bss;
use crate::paging;
use crate::platform::{self, pvalidate, rdmsr};
use crate::{io, EXIT_BAD_CMDLINE, EXIT_FAILED};
use core::arch::asm;
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};
use umbra_firmware::cmdline::Cmdline;
use umbra_firmware::guest_msg::{
    self, MSG_REPORT_REQ, MSG_REPORT_RSP, REPORT_RSP_REPORT, REPORT_SIZE,
};
use umbra_firmware::layout::{
    CERTS_GPA, CERTS_PAGES, GUEST_REQUEST_GPA, GUEST_RESPONSE_GPA, MSR_GHCB, PROBE_NOT_RAM,
    PROBE_OK, PROBE_PORT, PROBE_REFUSED_PRIVATE, PSC_TEST_GPA, SCRATCH_GPA, SECRETS_PAGE_GPA,
    SECRETS_VMPCK0,
};

fn require_snp() -> bool {
    if !platform::current().is_snp() {
        io::print("this scenario needs an SNP platform (--platform snp-model)\n");
        return false;
    }
    true
}

fn fail(what: &str, value: u64) -> u32 {
    io::print(what);
    io::print(" ");
    io::print_hex(value);
    io::print(": fail\n");
    EXIT_FAILED
}

/// A 4 KiB page at a fixed guest-physical address.
fn page(gpa: u64) -> &'static mut [u8; 4096] {
    // SAFETY: the addresses passed are the fixed, page-aligned, identity-
    // mapped pages of `layout` reserved for this use; only the bootstrap
    // vCPU runs scenarios, so no two live references alias.
    unsafe { &mut *(gpa as *mut [u8; 4096]) }
}

fn hex_nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn parse_report_data(text: &str) -> Option<[u8; 64]> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) || bytes.len() > 128 {
        return None;
    }
    let mut out = [0u8; 64];
    for (i, pair) in bytes.chunks(2).enumerate() {
        out[i] = (hex_nibble(pair[0])? << 4) | hex_nibble(pair[1])?;
    }
    Some(out)
}

/// Why a report could not be obtained: what failed and the value (status,
/// code) that says how.
#[derive(Debug)]
pub struct ReportError {
    pub what: &'static str,
    pub value: u64,
}

fn report_error(what: &'static str, value: u64) -> ReportError {
    ReportError { what, value }
}

/// How a report is asked for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    /// SNP_GUEST_REQUEST: the report only.
    Plain,
    /// SNP extended guest request: the host also writes its certificate
    /// table to the shared pages at [`CERTS_GPA`].
    WithCertificates,
}

/// An attestation report carrying `report_data`, through an SNP guest
/// request (MSG_REPORT_REQ, VMPCK0) with the response checked as Linux's
/// sev-guest driver checks it.
pub fn request_report(
    report_data: &[u8; 64],
    kind: ReportKind,
) -> Result<[u8; REPORT_SIZE], ReportError> {
    ghcb::establish(&[GUEST_REQUEST_GPA, GUEST_RESPONSE_GPA])
        .map_err(|e| report_error(e.what, e.response))?;
    if kind == ReportKind::WithCertificates {
        for i in 0..CERTS_PAGES {
            ghcb::psc(CERTS_GPA + i * 0x1000, false)
                .map_err(|code| report_error("cannot share the certificate pages", code))?;
        }
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&page(SECRETS_PAGE_GPA)[SECRETS_VMPCK0..SECRETS_VMPCK0 + 32]);
    if key == [0; 32] {
        return Err(report_error("VMPCK0 in the secrets page is zero", 0));
    }

    // Encrypt in private memory, then copy to the shared request page.
    let scratch = page(SCRATCH_GPA);
    let payload = guest_msg::report_request(report_data);
    let sequence = next_sequence();
    if guest_msg::seal(&key, sequence, MSG_REPORT_REQ, 0, &payload, scratch).is_err() {
        return Err(report_error("cannot build the request", 0));
    }
    page(GUEST_REQUEST_GPA).copy_from_slice(scratch);
    let outcome = match kind {
        ReportKind::Plain => ghcb::call(
            ghcb::SNP_GUEST_REQUEST,
            GUEST_REQUEST_GPA,
            GUEST_RESPONSE_GPA,
        )
        .map(|info2| (info2, 0)),
        ReportKind::WithCertificates => ghcb::ext_guest_request(
            GUEST_REQUEST_GPA,
            GUEST_RESPONSE_GPA,
            CERTS_GPA,
            CERTS_PAGES,
        ),
    };
    let (mut info1, mut info2) = match outcome {
        Ok((info2, pages)) => {
            if info2 == SNP_GUEST_VMM_ERR_INVALID_LEN {
                io::print("the host's certificate table needs ");
                io::print_dec(pages);
                io::print(" pages; asking without certificates\n");
            }
            (0, info2)
        }
        Err(e) => (e.info1, e.info2),
    };
    // The request never reached the firmware, so its sequence number is
    // still the next one: send the same sealed message as a plain guest
    // request, as Linux's sev-guest does, so that the guest's and the
    // firmware's counters stay in step (and no number is used twice).
    if kind == ReportKind::WithCertificates && info1 == 0 && info2 == SNP_GUEST_VMM_ERR_INVALID_LEN
    {
        (info1, info2) = match ghcb::call(
            ghcb::SNP_GUEST_REQUEST,
            GUEST_REQUEST_GPA,
            GUEST_RESPONSE_GPA,
        ) {
            Ok(info2) => (0, info2),
            Err(e) => (e.info1, e.info2),
        };
    }
    if info1 as u32 != 0 || info2 != 0 {
        io::print("guest request failed, sw_exit_info_1 ");
        io::print_hex(info1);
        io::print("\n");
        return Err(report_error("guest request failed, sw_exit_info_2", info2));
    }

    scratch.copy_from_slice(page(GUEST_RESPONSE_GPA));
    let response = match guest_msg::open(&key, 0, sequence + 1, scratch) {
        Ok((MSG_REPORT_RSP, body)) if body.len() >= REPORT_RSP_REPORT + REPORT_SIZE => body,
        Ok((other, _)) => return Err(report_error("unexpected response type", u64::from(other))),
        Err(_) => return Err(report_error("response did not authenticate", 0)),
    };
    let status = u32::from_le_bytes([response[0], response[1], response[2], response[3]]);
    if status != 0 {
        return Err(report_error("firmware status", u64::from(status)));
    }
    // MSG_REPORT_RSP REPORT_SIZE, checked as Linux checks it.
    let size = u32::from_le_bytes([response[4], response[5], response[6], response[7]]);
    if size as usize != REPORT_SIZE {
        return Err(report_error("report size", u64::from(size)));
    }
    let mut report = [0u8; REPORT_SIZE];
    report.copy_from_slice(&response[REPORT_RSP_REPORT..REPORT_RSP_REPORT + REPORT_SIZE]);
    if report[0x50..0x90] != report_data[..] {
        return Err(report_error("the report carries other REPORT_DATA", 0));
    }
    Ok(report)
}

/// The host could not fit its certificate table (Linux uapi sev-guest.h
/// `SNP_GUEST_ERR(SNP_GUEST_VMM_ERR_INVALID_LEN, 0)`).
const SNP_GUEST_VMM_ERR_INVALID_LEN: u64 = 1 << 32;

/// The host's certificate table from the last extended request, copied
/// into private memory before anyone reads it (the host may change the
/// shared pages at any time).
pub fn certificate_table() -> alloc::vec::Vec<u8> {
    let mut table = alloc::vec![0u8; (CERTS_PAGES * 0x1000) as usize];
    for (i, chunk) in table.chunks_exact_mut(0x1000).enumerate() {
        chunk.copy_from_slice(&page(CERTS_GPA + i as u64 * 0x1000)[..]);
    }
    table
}

/// The sequence number of the next request: each request/response pair
/// takes two (Linux's sev-guest driver: request n, response n + 1), and a
/// number is never reused with VMPCK0.
fn next_sequence() -> u64 {
    bss!(SEQUENCE, AtomicU64).fetch_add(2, Ordering::AcqRel) + 1
}

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Requests an attestation report carrying `report_data=HEX` and prints it.
pub fn attest(cmdline: &Cmdline) -> u32 {
    if !require_snp() {
        return EXIT_BAD_CMDLINE;
    }
    let Some(report_data) = parse_report_data(cmdline.get("report_data").unwrap_or("")) else {
        io::print("attest: report_data must be up to 64 bytes of hex\n");
        return EXIT_BAD_CMDLINE;
    };
    let report = match request_report(&report_data, ReportKind::Plain) {
        Ok(report) => report,
        Err(e) => {
            io::print("attest: ");
            return fail(e.what, e.value);
        }
    };
    io::print("attest: report ");
    io::print_hex_bytes(&report);
    io::print("\n");
    io::print("attest: report for our REPORT_DATA received: ok\n");
    0
}

fn outl(port: u16, value: u32) {
    // SAFETY: the probe port has no memory effects on the guest (no
    // `nostack`: under SNP this raises #VC, whose frame goes below RSP).
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, preserves_flags)) };
}

fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: as above.
    unsafe { asm!("in eax, dx", out("eax") value, in("dx") port, options(nomem, preserves_flags)) };
    value
}

/// Asks the VMM to read the first dword of a page: (value, status).
fn probe(gpa: u64) -> (u32, u32) {
    outl(PROBE_PORT, gpa as u32);
    (inl(PROBE_PORT), inl(PROBE_PORT + 4))
}

/// Converts a page private -> shared -> private and checks what the VMM sees.
pub fn psc_scenario() -> u32 {
    if !require_snp() {
        return EXIT_BAD_CMDLINE;
    }
    if let Err(v) = negotiate() {
        return fail("psc: GHCB protocol negotiation refused", v);
    }
    let target = PSC_TEST_GPA as *mut u32;
    // 1. Private and validated: the guest owns it; the VMM must not see it.
    let (code, no_update) = pvalidate(PSC_TEST_GPA, true, false);
    if code != 0 || no_update {
        return fail("psc: PVALIDATE of a fresh private page", u64::from(code));
    }
    // SAFETY: PSC_TEST_GPA is identity-mapped guest RAM reserved for this test.
    unsafe { ptr::write_volatile(target, 0x5EC2_E700) };
    let (_, status) = probe(PSC_TEST_GPA);
    if status != PROBE_REFUSED_PRIVATE {
        return fail("psc: VMM read a private page, status", u64::from(status));
    }
    // 2. Double validation is refused (no RMP update).
    let (code, no_update) = pvalidate(PSC_TEST_GPA, true, false);
    if !no_update {
        return fail("psc: double PVALIDATE was accepted, code", u64::from(code));
    }
    // 3. Shared: rescind validation, convert, write; the VMM sees the bytes.
    let (code, _) = pvalidate(PSC_TEST_GPA, false, false);
    if code != 0 {
        return fail("psc: PVALIDATE rescind", u64::from(code));
    }
    if let Err(v) = psc(PSC_TEST_GPA, false) {
        return fail("psc: conversion to shared refused", v);
    }
    // SAFETY: as above.
    unsafe { ptr::write_volatile(target, 0x5AA4_ED00) };
    let (value, status) = probe(PSC_TEST_GPA);
    if status != PROBE_OK || value != 0x5AA4_ED00 {
        return fail(
            "psc: VMM did not see the shared page, status",
            u64::from(status),
        );
    }
    // 4. Back to private: the VMM loses access again.
    if let Err(v) = psc(PSC_TEST_GPA, true) {
        return fail("psc: conversion to private refused", v);
    }
    let (code, _) = pvalidate(PSC_TEST_GPA, true, false);
    if code != 0 {
        return fail("psc: PVALIDATE after conversion", u64::from(code));
    }
    let (_, status) = probe(PSC_TEST_GPA);
    if status != PROBE_REFUSED_PRIVATE {
        return fail(
            "psc: VMM read the page after it became private, status",
            u64::from(status),
        );
    }
    // 5. A conversion of ROM is refused with an architected error.
    if psc(0xFFFF_0000, false).is_ok() {
        return fail("psc: conversion of ROM was accepted", 0);
    }
    io::print("psc: private -> shared -> private seen correctly by the VMM; double validation and ROM conversion refused: ok\n");
    let _ = rdmsr(MSR_GHCB);
    0
}

/// Asks the VMM to read a private page and expects a refusal.
pub fn private_read() -> u32 {
    if !require_snp() {
        return EXIT_BAD_CMDLINE;
    }
    let (_, status) = probe(SECRETS_PAGE_GPA);
    let (_, rom) = probe(0xFFFF_0000);
    io::print("private-read: VMM read of the secrets page: ");
    match status {
        PROBE_REFUSED_PRIVATE => io::print("refused"),
        PROBE_OK => io::print("ALLOWED"),
        _ => io::print("other"),
    }
    io::print("\n");
    if status == PROBE_REFUSED_PRIVATE && rom == PROBE_NOT_RAM {
        io::print("private-read: ok\n");
        0
    } else {
        EXIT_FAILED
    }
}

/// `no-cbit`: a guest request whose shared request page is mapped with
/// the C-bit, as a guest that forgot to clear it would make (on silicon
/// its writes would land encrypted and the access fault). The strict model
/// checks the mappings a guest request uses and stops the run.
pub fn no_cbit() -> u32 {
    if !require_snp() {
        return EXIT_BAD_CMDLINE;
    }
    if let Err(e) = ghcb::establish(&[GUEST_REQUEST_GPA, GUEST_RESPONSE_GPA]) {
        io::print("no-cbit: ");
        return fail(e.what, e.response);
    }
    io::print("no-cbit: the shared request page mapped with the C-bit, then a guest request\n");
    paging::set_private(GUEST_REQUEST_GPA, true);
    let _ = ghcb::call(
        ghcb::SNP_GUEST_REQUEST,
        GUEST_REQUEST_GPA,
        GUEST_RESPONSE_GPA,
    );
    paging::set_private(GUEST_REQUEST_GPA, false);
    io::print("no-cbit: the guest request went through (is the platform strict?): fail\n");
    EXIT_FAILED
}

/// Removes the #VC handler and writes port 0x80 directly, as an SEV-ES
/// guest without a handler would: the platform must stop the guest (on
/// silicon the #VC finds no gate and the vCPU shuts down; the strict model
/// stops the run naming the port). Reaching the end is a failure.
pub fn no_vc() -> u32 {
    if !require_snp() {
        return EXIT_BAD_CMDLINE;
    }
    io::print("no-vc: writing port 0x80 without a #VC handler\n");
    exceptions::clear_gate(VECTOR_VC);
    // SAFETY: a one-byte write to the POST-code port, no memory effects;
    // the fault it must raise is the point of the scenario.
    unsafe { asm!("out 0x80, al", in("al") 0u8, options(nomem, preserves_flags)) };
    exceptions::install();
    io::print("no-vc: the port write did not raise #VC (is the platform strict?): fail\n");
    EXIT_FAILED
}
