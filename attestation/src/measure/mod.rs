//! Launch measurement: the SNP launch digest, the SEV and SEV-ES digests, and
//! the page plan a VMM must follow to reproduce them.
//!
//! The order of launch updates lives in one place, [`snp_launch_steps`]: the
//! digest functions here walk it, and the VMM's launch code walks the same
//! list to issue `KVM_SEV_SNP_LAUNCH_UPDATE` calls (skipping
//! [`StepSource::Vmsa`] steps, which KVM adds itself at LAUNCH_FINISH).
//!
//! No I/O happens here: callers pass image bytes in.

pub mod gctx;
pub mod kernel_hashes;
pub mod ovmf;
mod sha;
pub mod vcpu_types;
pub mod vmsa;

pub use gctx::{LaunchDigest, PageInfo, PageType, LD_SIZE, PAGE_SIZE, VMSA_GPA};
pub use kernel_hashes::KernelHashes;
pub use ovmf::{FirmwareImage, MetadataSection, OvmfError, SectionType};
pub use vmsa::{SevEsSaveArea, VmmType};

use sha::{sha384, Sha256};

/// Errors from computing a launch digest or plan.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MeasureError {
    /// The firmware image could not be parsed.
    #[error("invalid firmware image")]
    Firmware(#[from] OvmfError),
    /// An image to be measured page by page is not a multiple of 4 KiB.
    #[error("{what} size {size:#x} is not a multiple of 4 KiB")]
    PageAlign {
        /// Which image or section.
        what: &'static str,
        /// Its size.
        size: u64,
    },
    /// The image has no SEV-ES reset block, so APs have no start address.
    #[error("Can't find SEV_ES_RESET_BLOCK_GUID entry in OVMF table")]
    ResetBlock,
    /// The SEV-ES reset block gives AP reset EIP 0.
    #[error("SEV-ES reset block gives AP reset EIP 0")]
    ApResetEip,
    /// A kernel was given but the image has no SNP_KERNEL_HASHES section.
    #[error("Kernel specified but OVMF metadata doesn't include SNP_KERNEL_HASHES section")]
    KernelHashesSection,
    /// A kernel was given but the image has no usable SEV hash table entry.
    #[error("Kernel specified but OVMF doesn't support kernel/initrd/cmdline measurement")]
    KernelHashesUnsupported,
    /// The SNP_KERNEL_HASHES section exists but the hash table entry is missing.
    #[error("Can't find SEV_HASH_TABLE_RV_GUID entry in OVMF table")]
    HashTableEntry,
    /// The kernel-hashes section is not one page, or the table does not fit.
    #[error(
        "SNP_KERNEL_HASHES section of {size:#x} bytes cannot hold the table at offset {offset:#x}"
    )]
    KernelHashesPage {
        /// Section size.
        size: u32,
        /// Table offset within the page.
        offset: u32,
    },
    /// A metadata section has a type this tool does not know how to measure.
    #[error("unknown OVMF metadata section type {0:#x}")]
    SectionType(u32),
    /// The SVSM image has no SVSM info entry.
    #[error("Can't find SVSM_INFO_GUID entry in SVSM table")]
    SvsmInfo,
    /// The image was parsed from its tail only and no page digests were given.
    #[error("firmware pages are needed but only the image tail was read")]
    ImageBytes,
    /// More vCPUs than any SNP guest can have.
    #[error("{0} vCPUs is more than the supported maximum of {MAX_VCPUS}")]
    Vcpus(u32),
    /// The OVMF-hash seed was given for a mode other than SNP.
    #[error("SNP OVMF hash only works with SNP")]
    OvmfHashMode,
}

/// SHA-384 of one 4 KiB page, with the backend the digest code uses; for
/// callers that hash pages while streaming a file
/// ([`MeasureInputs::firmware_page_digests`]).
pub fn page_digest(page: &[u8]) -> [u8; LD_SIZE] {
    sha384(page)
}

/// Largest vCPU count accepted (KVM's x86 limit is 4096; this leaves room).
pub const MAX_VCPUS: u32 = 65536;

/// Which image a [`StepSource::Image`] step reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageSlot {
    /// The firmware (OVMF or ours).
    Firmware,
    /// The SVSM image (`snp:svsm`).
    Svsm,
}

/// Where the contents of a launch step come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepSource {
    /// Bytes `offset .. offset + len` of an image.
    Image {
        /// Which image.
        slot: ImageSlot,
        /// Byte offset in the image.
        offset: usize,
    },
    /// The kernel-hashes page ([`KernelHashes::page`] at the hash table offset).
    KernelHashes {
        /// Offset of the table within the page.
        offset: usize,
    },
    /// No contents (ZERO, UNMEASURED, SECRETS and CPUID pages).
    None,
    /// The VMSA of vCPU `vcpu`, added by KVM at LAUNCH_FINISH, not by the VMM.
    Vmsa {
        /// vCPU index (0 = BSP).
        vcpu: u32,
    },
}

/// One launch update: `len / 4096` pages of one type from `gpa`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchStep {
    /// Page type of every page in the range.
    pub page_type: PageType,
    /// First guest-physical address ([`VMSA_GPA`] for VMSAs).
    pub gpa: u64,
    /// Length in bytes, a multiple of 4 KiB.
    pub len: u64,
    /// Where the contents come from.
    pub source: StepSource,
}

impl LaunchStep {
    /// Number of 4 KiB pages in the step.
    pub fn pages(&self) -> u64 {
        self.len / PAGE_SIZE as u64
    }

    /// Guest-physical address of each page, in update order.
    pub fn page_gpas(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.pages()).map(move |i| {
            if self.page_type == PageType::Vmsa {
                self.gpa
            } else {
                self.gpa + i * PAGE_SIZE as u64
            }
        })
    }

    /// The bytes a NORMAL image step loads, from the image of its slot.
    pub fn image_bytes<'a>(&self, image: &FirmwareImage<'a>) -> Option<&'a [u8]> {
        match self.source {
            StepSource::Image { offset, .. } if image.is_complete() => image
                .data()
                .get(offset..offset.checked_add(self.len as usize)?),
            _ => None,
        }
    }
}

/// Options of an OVMF-style SNP launch plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanOptions {
    /// Whose page ordering and VMSA template to follow.
    pub vmm_type: VmmType,
    /// Whether a kernel-hashes table is measured (QEMU `kernel-hashes=on`).
    pub kernel_hashes: bool,
    /// Whether the firmware pages are part of the plan (false when resuming
    /// from a precomputed firmware digest).
    pub include_firmware: bool,
    /// Number of vCPUs (one VMSA step each).
    pub vcpus: u32,
}

fn check_aligned(what: &'static str, size: u64) -> Result<(), MeasureError> {
    if !size.is_multiple_of(PAGE_SIZE as u64) {
        return Err(MeasureError::PageAlign { what, size });
    }
    Ok(())
}

fn image_step(slot: ImageSlot, img: &FirmwareImage<'_>) -> Result<LaunchStep, MeasureError> {
    check_aligned(
        match slot {
            ImageSlot::Firmware => "firmware image",
            ImageSlot::Svsm => "SVSM image",
        },
        img.size() as u64,
    )?;
    Ok(LaunchStep {
        page_type: PageType::Normal,
        gpa: img.gpa(),
        len: img.size() as u64,
        source: StepSource::Image { slot, offset: 0 },
    })
}

fn vmsa_steps(steps: &mut Vec<LaunchStep>, vcpus: u32) -> Result<(), MeasureError> {
    if vcpus > MAX_VCPUS {
        return Err(MeasureError::Vcpus(vcpus));
    }
    steps.extend((0..vcpus).map(|vcpu| LaunchStep {
        page_type: PageType::Vmsa,
        gpa: VMSA_GPA,
        len: PAGE_SIZE as u64,
        source: StepSource::Vmsa { vcpu },
    }));
    Ok(())
}

/// The metadata sections of `img` as launch steps (QEMU
/// `snp_populate_metadata_pages`, sev-snp-measure `snp_update_metadata_pages`).
fn metadata_steps(
    steps: &mut Vec<LaunchStep>,
    img: &FirmwareImage<'_>,
    kernel_hashes: bool,
    vmm: VmmType,
) -> Result<(), MeasureError> {
    for s in img.sections() {
        let gpa = u64::from(s.gpa);
        let len = u64::from(s.size);
        let step = |page_type, len| LaunchStep {
            page_type,
            gpa,
            len,
            source: StepSource::None,
        };
        match s.section_type {
            SectionType::SnpSecMem => {
                check_aligned("SNP_SEC_MEM section", len)?;
                let t = if vmm == VmmType::Gce {
                    PageType::Unmeasured
                } else {
                    PageType::Zero
                };
                steps.push(step(t, len));
            }
            SectionType::SnpSecrets => steps.push(step(PageType::Secrets, PAGE_SIZE as u64)),
            SectionType::Cpuid => {
                if vmm != VmmType::Ec2 {
                    steps.push(step(PageType::Cpuid, PAGE_SIZE as u64));
                }
            }
            SectionType::SnpKernelHashes => {
                if kernel_hashes {
                    let table_gpa = img.hash_table_gpa()?.ok_or(MeasureError::HashTableEntry)?;
                    let offset = table_gpa & 0xfff;
                    if len != PAGE_SIZE as u64 || offset as usize + 176 > PAGE_SIZE {
                        return Err(MeasureError::KernelHashesPage {
                            size: s.size,
                            offset,
                        });
                    }
                    steps.push(LaunchStep {
                        page_type: PageType::Normal,
                        gpa,
                        len,
                        source: StepSource::KernelHashes {
                            offset: offset as usize,
                        },
                    });
                } else {
                    check_aligned("SNP_KERNEL_HASHES section", len)?;
                    steps.push(step(PageType::Zero, len));
                }
            }
            SectionType::SvsmCaa => {
                check_aligned("SVSM_CAA section", len)?;
                steps.push(step(PageType::Zero, len));
            }
            SectionType::Unknown(t) => return Err(MeasureError::SectionType(t)),
        }
    }
    if vmm == VmmType::Ec2 {
        for s in img.sections() {
            if s.section_type == SectionType::Cpuid {
                steps.push(LaunchStep {
                    page_type: PageType::Cpuid,
                    gpa: u64::from(s.gpa),
                    len: PAGE_SIZE as u64,
                    source: StepSource::None,
                });
            }
        }
    }
    if kernel_hashes && !img.has_section(SectionType::SnpKernelHashes) {
        return Err(MeasureError::KernelHashesSection);
    }
    Ok(())
}

/// The launch plan of an OVMF-style SNP guest: firmware pages, metadata
/// sections in table order (EC2: CPUID pages last), then one VMSA per vCPU.
pub fn snp_launch_steps(
    fw: &FirmwareImage<'_>,
    opts: &PlanOptions,
) -> Result<Vec<LaunchStep>, MeasureError> {
    let mut steps = Vec::with_capacity(fw.sections().len() + 1);
    if opts.include_firmware {
        steps.push(image_step(ImageSlot::Firmware, fw)?);
    }
    metadata_steps(&mut steps, fw, opts.kernel_hashes, opts.vmm_type)?;
    vmsa_steps(&mut steps, opts.vcpus)?;
    Ok(steps)
}

/// The launch plan of `snp:svsm`: the firmware, the SVSM image (parsed to end
/// at `firmware GPA − vars size`), the SVSM's metadata sections, the VMSAs.
pub fn svsm_launch_steps(
    fw: &FirmwareImage<'_>,
    svsm: &FirmwareImage<'_>,
    vcpus: u32,
) -> Result<Vec<LaunchStep>, MeasureError> {
    let mut steps = vec![
        image_step(ImageSlot::Firmware, fw)?,
        image_step(ImageSlot::Svsm, svsm)?,
    ];
    metadata_steps(&mut steps, svsm, false, VmmType::Qemu)?;
    vmsa_steps(&mut steps, vcpus)?;
    Ok(steps)
}

/// Inputs of an OVMF-style launch digest (modes `snp`, `seves`).
#[derive(Debug, Clone)]
pub struct MeasureInputs<'a> {
    /// The firmware image.
    pub firmware: &'a FirmwareImage<'a>,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// vCPU CPUID signature (RDX at reset in QEMU mode).
    pub vcpu_sig: u32,
    /// VMSA SEV_FEATURES (SNP only; SEV-ES uses 0).
    pub guest_features: u64,
    /// Hypervisor model.
    pub vmm_type: VmmType,
    /// Kernel/initrd/cmdline hashes for measured direct boot.
    pub kernel_hashes: Option<KernelHashes>,
    /// Precomputed digest of the firmware pages (sev-snp-measure `--snp-ovmf-hash`).
    pub ovmf_hash: Option<[u8; LD_SIZE]>,
    /// SHA-384 of each 4 KiB firmware page, when the caller hashed them while
    /// reading the file (then `firmware` may come from
    /// [`FirmwareImage::parse_tail`]). `None`: hash `firmware.data()`.
    pub firmware_page_digests: Option<&'a [[u8; LD_SIZE]]>,
}

/// The BSP and AP save areas of an OVMF-style guest.
#[derive(Debug, Clone)]
pub struct VcpuSaveAreas {
    /// vCPU 0.
    pub bsp: SevEsSaveArea,
    /// Every other vCPU (they are identical); `None` when the AP reset EIP is 0.
    pub ap: Option<SevEsSaveArea>,
}

impl VcpuSaveAreas {
    /// Builds the save areas from the image's SEV-ES reset block.
    pub fn new(
        fw: &FirmwareImage<'_>,
        sev_features: u64,
        vcpu_sig: u32,
        vmm: VmmType,
    ) -> Result<Self, MeasureError> {
        let ap_eip = fw.sev_es_reset_eip()?.ok_or(MeasureError::ResetBlock)?;
        Ok(Self {
            bsp: vmsa::build_save_area(vmsa::BSP_EIP, sev_features, vcpu_sig, vmm),
            ap: (ap_eip != 0).then(|| vmsa::build_save_area(ap_eip, sev_features, vcpu_sig, vmm)),
        })
    }

    /// The save area of vCPU `index`.
    pub fn get(&self, index: u32) -> Result<&SevEsSaveArea, MeasureError> {
        if index == 0 {
            Ok(&self.bsp)
        } else {
            self.ap.as_ref().ok_or(MeasureError::ApResetEip)
        }
    }
}

struct Walk<'a> {
    firmware: &'a FirmwareImage<'a>,
    firmware_digests: Option<&'a [[u8; LD_SIZE]]>,
    svsm: Option<&'a FirmwareImage<'a>>,
    kernel_hashes: Option<&'a KernelHashes>,
    bsp: &'a SevEsSaveArea,
    ap: Option<&'a SevEsSaveArea>,
}

fn walk(ld: &mut LaunchDigest, steps: &[LaunchStep], w: &Walk<'_>) -> Result<(), MeasureError> {
    let bsp_digest = sha384(w.bsp.as_page());
    let mut ap_digest: Option<[u8; LD_SIZE]> = None;
    for step in steps {
        match step.source {
            StepSource::Image { slot, offset } => {
                let (img, digests) = match slot {
                    ImageSlot::Firmware => (w.firmware, w.firmware_digests),
                    ImageSlot::Svsm => (w.svsm.unwrap_or(w.firmware), None),
                };
                let (first, count) = (offset / PAGE_SIZE, step.len as usize / PAGE_SIZE);
                match digests.and_then(|d| d.get(first..first + count)) {
                    Some(d) => {
                        let mut gpa = step.gpa;
                        for page in d {
                            ld.update_with_digest(PageType::Normal, gpa, page);
                            gpa += PAGE_SIZE as u64;
                        }
                    }
                    None => {
                        let data = img
                            .data()
                            .get(offset..offset + step.len as usize)
                            .filter(|_| img.is_complete())
                            .ok_or(MeasureError::ImageBytes)?;
                        hash_pages(ld, step.gpa, data);
                    }
                }
            }
            StepSource::KernelHashes { offset } => {
                let page = w.kernel_hashes.and_then(|k| k.page(offset)).ok_or(
                    MeasureError::KernelHashesPage {
                        size: step.len as u32,
                        offset: offset as u32,
                    },
                )?;
                ld.update(step.page_type, step.gpa, Some(&page));
            }
            StepSource::None => ld.update_range(step.page_type, step.gpa, step.len),
            StepSource::Vmsa { vcpu } => {
                let d = if vcpu == 0 {
                    bsp_digest
                } else if let Some(d) = ap_digest {
                    d
                } else {
                    let ap = w.ap.ok_or(MeasureError::ApResetEip)?;
                    let d = sha384(ap.as_page());
                    ap_digest = Some(d);
                    d
                };
                ld.update_with_digest(PageType::Vmsa, step.gpa, &d);
            }
        }
    }
    Ok(())
}

/// Hashes consecutive NORMAL pages on the calling thread. (Splitting the
/// page hashing over two threads was measured: it gains on an idle machine
/// but loses up to 1.6x on a loaded 2-core one, so it is not done.)
fn hash_pages(ld: &mut LaunchDigest, gpa: u64, data: &[u8]) {
    ld.update_normal_pages(gpa, data);
}

/// The digest of the firmware pages alone (sev-snp-measure `snp:ovmf-hash`).
pub fn snp_ovmf_hash(fw: &FirmwareImage<'_>) -> Result<[u8; LD_SIZE], MeasureError> {
    check_aligned("firmware image", fw.size() as u64)?;
    if !fw.is_complete() {
        return Err(MeasureError::ImageBytes);
    }
    let mut ld = LaunchDigest::new();
    hash_pages(&mut ld, fw.gpa(), fw.data());
    Ok(ld.digest())
}

/// The SNP launch digest of an OVMF-style guest (sev-snp-measure `--mode snp`).
pub fn snp_launch_digest(inp: &MeasureInputs<'_>) -> Result<[u8; LD_SIZE], MeasureError> {
    let opts = PlanOptions {
        vmm_type: inp.vmm_type,
        kernel_hashes: inp.kernel_hashes.is_some(),
        include_firmware: inp.ovmf_hash.is_none(),
        vcpus: inp.vcpus,
    };
    let steps = snp_launch_steps(inp.firmware, &opts)?;
    let areas = VcpuSaveAreas::new(inp.firmware, inp.guest_features, inp.vcpu_sig, inp.vmm_type)?;
    let mut ld = inp
        .ovmf_hash
        .map_or_else(LaunchDigest::new, LaunchDigest::with_seed);
    walk(
        &mut ld,
        &steps,
        &Walk {
            firmware: inp.firmware,
            firmware_digests: inp.firmware_page_digests,
            svsm: None,
            kernel_hashes: inp.kernel_hashes.as_ref(),
            bsp: &areas.bsp,
            ap: areas.ap.as_ref(),
        },
    )?;
    Ok(ld.digest())
}

/// Inputs of an `snp:svsm` launch digest.
#[derive(Debug, Clone)]
pub struct SvsmInputs<'a> {
    /// The OVMF image (ends at 4 GiB).
    pub firmware: &'a FirmwareImage<'a>,
    /// The SVSM image, parsed with [`FirmwareImage::parse_at`] to end at
    /// `firmware.gpa() − vars_size`.
    pub svsm: &'a FirmwareImage<'a>,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// vCPU CPUID signature.
    pub vcpu_sig: u32,
}

/// The save area every vCPU of an `snp:svsm` guest starts with.
pub fn svsm_save_area(inp: &SvsmInputs<'_>) -> Result<SevEsSaveArea, MeasureError> {
    let entry = inp
        .svsm
        .svsm_entry_offset()?
        .ok_or(MeasureError::SvsmInfo)?;
    let eip = u64::from(entry) + inp.svsm.gpa();
    Ok(vmsa::build_svsm_save_area(eip, 0x1, inp.vcpu_sig))
}

/// The SNP launch digest of a Coconut-SVSM guest (sev-snp-measure `snp:svsm`;
/// every vCPU starts at the SVSM entry in flat 32-bit mode, SEV_FEATURES 0x1).
pub fn svsm_launch_digest(inp: &SvsmInputs<'_>) -> Result<[u8; LD_SIZE], MeasureError> {
    let area = svsm_save_area(inp)?;
    let steps = svsm_launch_steps(inp.firmware, inp.svsm, inp.vcpus)?;
    let mut ld = LaunchDigest::new();
    walk(
        &mut ld,
        &steps,
        &Walk {
            firmware: inp.firmware,
            firmware_digests: None,
            svsm: Some(inp.svsm),
            kernel_hashes: None,
            bsp: &area,
            ap: Some(&area),
        },
    )?;
    Ok(ld.digest())
}

fn sev_common(
    fw: &FirmwareImage<'_>,
    kernel_hashes: Option<&KernelHashes>,
) -> Result<Sha256, MeasureError> {
    if !fw.is_complete() {
        return Err(MeasureError::ImageBytes);
    }
    let mut h = Sha256::new();
    h.update(fw.data());
    if let Some(k) = kernel_hashes {
        if !fw.supports_kernel_hashes()? {
            return Err(MeasureError::KernelHashesUnsupported);
        }
        h.update(&k.table_bytes());
    }
    Ok(h)
}

/// The SEV-ES launch digest: SHA-256(firmware ‖ hash table ‖ VMSAs), with
/// SEV_FEATURES 0 (sev-snp-measure `--mode seves`).
pub fn seves_digest(inp: &MeasureInputs<'_>) -> Result<[u8; 32], MeasureError> {
    if inp.ovmf_hash.is_some() {
        return Err(MeasureError::OvmfHashMode);
    }
    if inp.vcpus > MAX_VCPUS {
        return Err(MeasureError::Vcpus(inp.vcpus));
    }
    let mut h = sev_common(inp.firmware, inp.kernel_hashes.as_ref())?;
    let areas = VcpuSaveAreas::new(inp.firmware, 0, inp.vcpu_sig, inp.vmm_type)?;
    for i in 0..inp.vcpus {
        h.update(areas.get(i)?.as_page());
    }
    Ok(h.finish())
}

/// The SEV launch digest: SHA-256(firmware ‖ hash table) (sev-snp-measure `--mode sev`).
pub fn sev_digest(
    fw: &FirmwareImage<'_>,
    kernel_hashes: Option<&KernelHashes>,
) -> Result<[u8; 32], MeasureError> {
    Ok(sev_common(fw, kernel_hashes)?.finish())
}
