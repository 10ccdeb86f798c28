//! Guest-physical layout and I/O ports shared by the firmware and the VMM.
//!
//! The ROM ends at 4 GiB like OVMF's flash, so the architectural reset vector
//! (0xFFFF_FFF0) lands in it. Everything the firmware writes before it has
//! parsed the boot information lives in low RAM at fixed addresses, listed
//! here once; the SEV metadata in the footer table describes the same ranges.

/// Size of the firmware ROM image.
pub const ROM_SIZE: u64 = 512 * 1024;
/// Guest-physical base of the ROM: the image ends exactly at 4 GiB.
pub const ROM_BASE: u64 = (1 << 32) - ROM_SIZE;
/// Address of the last 4 KiB page of the ROM, where the 16/32-bit boot code,
/// the SEV metadata and the footer table live.
pub const ROM_BOOT_PAGE: u64 = (1 << 32) - 0x1000;
/// Address of the SEV metadata header (`ASEV`) inside the ROM.
pub const SEV_METADATA_GPA: u64 = (1 << 32) - 0x800;
/// Address of the footer-table blob: it fills the bytes up to `image_end - 0x20`.
pub const FOOTER_GPA: u64 = (1 << 32) - 0x100;
/// Architectural reset vector.
pub const RESET_VECTOR: u64 = 0xFFFF_FFF0;

/// Page with the boot information the VMM writes for the firmware.
pub const BOOT_INFO_GPA: u64 = 0x7000;
/// Identity-mapping page tables: PML4, PDPT, four page directories and two
/// page tables for the first 4 MiB (4 KiB pages, so pages can be shared).
pub const PAGE_TABLES_GPA: u64 = 0x10000;
/// Bytes of page tables built by the boot code.
pub const PAGE_TABLES_SIZE: u64 = 8 * 0x1000;
/// The two page tables mapping the first 4 MiB in 4 KiB pages.
pub const PAGE_TABLE_4K_GPA: u64 = PAGE_TABLES_GPA + 6 * 0x1000;
/// Bytes mapped by the 4 KiB page tables.
pub const PAGE_TABLE_4K_SPAN: u64 = 4 << 20;
/// SNP secrets page (filled by the SEV firmware at launch).
pub const SECRETS_PAGE_GPA: u64 = 0x18000;
/// SNP CPUID page (filled by the VMM, checked by the SEV firmware).
pub const CPUID_PAGE_GPA: u64 = 0x19000;
/// The firmware's zero-initialised statics.
pub const BSS_GPA: u64 = 0x20000;
/// Size reserved for statics.
pub const BSS_SIZE: u64 = 0x10000;
/// Per-vCPU stacks grow down from here; vCPU `n` uses the `n`-th slot below.
pub const STACKS_TOP: u64 = 0x20_0000;
/// Size of one vCPU's stack.
pub const STACK_SIZE: u64 = 0x4000;
/// Number of vCPUs the firmware has stacks for.
pub const MAX_VCPUS: u32 = 64;
/// Lowest guest RAM the firmware can run with (stacks end at 2 MiB).
pub const MIN_RAM: u64 = 4 << 20;

/// COM1, a 16550 UART.
pub const SERIAL_PORT: u16 = 0x3F8;
/// QEMU's `isa-debug-exit` default port. A 32-bit write of `code` ends the
/// run. umbra exits with `code`; QEMU exits with `(code << 1) | 1`.
pub const DEBUG_EXIT_PORT: u16 = 0xF4;
/// Width of the debug-exit register.
pub const DEBUG_EXIT_SIZE: u16 = 4;

/// umbra's hypervisor CPUID leaves, above KVM's own at 0x4000_0000.
/// `0x4000_0100`: EAX = highest umbra leaf, EBX/ECX/EDX = "UmbraUmbraVM".
pub const UMBRA_CPUID_LEAF: u32 = 0x4000_0100;
/// `0x4000_0101`: EAX = feature bits ([`UMBRA_FEATURE_SNP_MODEL`]).
pub const UMBRA_CPUID_FEATURES: u32 = 0x4000_0101;
/// The SNP firmware model answers the paravirtual MSRs below.
pub const UMBRA_FEATURE_SNP_MODEL: u32 = 1 << 0;

/// GHCB MSR (AMD GHCB spec 56421 §2.3.1).
pub const MSR_GHCB: u32 = 0xC001_0130;
/// SEV_STATUS MSR: bit 0 SEV, bit 1 SEV-ES, bit 2 SNP (AMD APM vol. 2 §15.34.10).
pub const MSR_SEV_STATUS: u32 = 0xC001_0131;
/// Paravirtual stand-in for VMGEXIT under the SNP model: a write hands the
/// current GHCB MSR value (or GHCB page) to the model, as VMGEXIT would.
/// Needed because `vmmcall` cannot reach userspace on every KVM.
pub const MSR_UMBRA_VMGEXIT: u32 = 0x4000_0130;
/// Paravirtual stand-in for PVALIDATE under the SNP model: write
/// `gpa | (validate << 1) | page_size_2m`, then read the PVALIDATE result
/// code (bit 63 set: no RMP update, i.e. rFLAGS.CF=1).
pub const MSR_UMBRA_PVALIDATE: u32 = 0x4000_0131;

/// Port through which the guest asks the VMM to read guest memory (tests of
/// the VMM's shared-only accessor): write a GPA (32-bit, page aligned), then
/// read 4 bytes: the first dword of the page as the VMM sees it, and the
/// status at port + 4 (`PROBE_*`).
pub const PROBE_PORT: u16 = 0xE8;
/// The VMM read the page.
pub const PROBE_OK: u32 = 0;
/// The VMM refused: the page is private to the guest.
pub const PROBE_REFUSED_PRIVATE: u32 = 1;
/// The VMM refused: not guest RAM.
pub const PROBE_NOT_RAM: u32 = 2;

/// The GHCB page the firmware shares with the VMM under SNP.
pub const GHCB_GPA: u64 = 0x1A000;
/// Shared page for an encrypted guest-request message.
pub const GUEST_REQUEST_GPA: u64 = 0x1B000;
/// Shared page for the encrypted response.
pub const GUEST_RESPONSE_GPA: u64 = 0x1C000;
/// Two private pages at the end of the statics window where the firmware
/// builds and decrypts messages (never shared).
pub const SCRATCH_GPA: u64 = 0x2E000;
/// The firmware's heap (the `kbs` scenario's JSON and JWE): private RAM
/// between the stacks and the page-state test page, validated by the
/// firmware before first use (the launch does not measure it).
pub const HEAP_GPA: u64 = 0x20_0000;
/// Size of the heap.
pub const HEAP_SIZE: u64 = 0x10_0000;
/// The page the `psc` scenario converts between private and shared.
pub const PSC_TEST_GPA: u64 = 0x30_0000;
/// Offset of VMPCK0 in the secrets page (SNP ABI secrets page layout).
pub const SECRETS_VMPCK0: usize = 0x20;

/// First virtio-mmio transport: umbra places device `i` at
/// `VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_SLOT`, in the VMM's MMIO window.
pub const VIRTIO_MMIO_BASE: u64 = 0xD000_0000;
/// One 4 KiB slot per transport.
pub const VIRTIO_MMIO_SLOT: u64 = 0x1000;
/// Most virtio-mmio transports umbra places.
pub const VIRTIO_MMIO_MAX: usize = 16;
/// GSI (IOAPIC pin) of transport 0; transport `i` uses `FIRST_GSI + i`.
pub const VIRTIO_MMIO_FIRST_GSI: u32 = 5;
/// QEMU 7.2 microvm: 24 transports from here in 512-byte steps.
pub const QEMU_MICROVM_VIRTIO_BASE: u64 = 0xFEB0_0000;
/// Step between QEMU microvm's transports.
pub const QEMU_MICROVM_VIRTIO_STEP: u64 = 0x200;
/// Number of QEMU microvm's transports.
pub const QEMU_MICROVM_VIRTIO_COUNT: usize = 24;
/// Where the firmware keeps its virtqueues and buffers: 4 KiB-mapped low
/// RAM (so pages can be shared one by one), above the page-state test page.
pub const VIRTIO_AREA_GPA: u64 = 0x31_0000;
/// Size of that area.
pub const VIRTIO_AREA_SIZE: u64 = 0x8_0000;
/// Shared pages where the host writes its certificate table on an
/// extended guest request (the `kbs` scenario's VCEK, ASK and ARK).
pub const CERTS_GPA: u64 = 0x3A_0000;
/// Number of those pages.
pub const CERTS_PAGES: u64 = 4;
/// A page the `dma-private` scenario keeps private and points a device at.
pub const DMA_PRIVATE_GPA: u64 = 0x39_0000;
/// First sector the `virtio-blk` scenario writes.
pub const BLK_TEST_FIRST_SECTOR: u64 = 1;
/// Sectors it writes (one 4 KiB buffer).
pub const BLK_TEST_SECTORS: u64 = 8;

/// Byte `offset` of sector `sector` as the `virtio-blk` scenario writes it.
pub const fn blk_test_byte(sector: u64, offset: usize) -> u8 {
    (offset as u8).wrapping_mul(31) ^ (sector as u8) ^ 0xA5
}
