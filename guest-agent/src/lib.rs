//! umbra-agent: obtains SEV-SNP attestation reports from inside a guest.
//!
//! The report comes through the kernel's configfs-tsm interface
//! (Documentation/ABI/testing/configfs-tsm): make a report entry, write the
//! 64 bytes of REPORT_DATA to `inblob`, read the signed report from
//! `outblob` and the host-supplied certificates from `auxblob`, and check
//! `generation` did not move underneath us (another writer). The report is
//! parsed and its REPORT_DATA compared with what was asked for, so a stale
//! or replayed report is refused here already.
//!
//! `kbs` releases secrets to the guest through a Trustee KBS (or
//! `umbra-attest serve`); `peer` checks another guest's evidence.

pub mod cert_table;
pub mod kbs;
pub mod peer;
pub mod sev_guest;
pub mod source;
pub mod tsm;
pub mod verify;
