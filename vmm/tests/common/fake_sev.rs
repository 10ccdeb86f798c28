//! A fake of the kernel's SEV-SNP support for `SnpHypervisor::with_kernel`:
//! what arch/x86/kvm/svm/sev.c and virt/kvm/guest_memfd.c (Linux 6.11)
//! check and answer, over a PLAIN KVM VM (type 0) so vCPUs, memslots and
//! registers are real, with the SNP firmware model (`SnpFirmwareModel`) as
//! the PSP behind it.
//!
//! Enforced, with the kernel's errno (and `kvm_sev_cmd.error`):
//! - INIT2 (`__sev_guest_init`): no vCPU created yet, once only, `flags`
//!   zero, `vmsa_features` within the advertised `KVM_X86_SEV_VMSA_FEATURES`
//!   (SNPActive is not in that set), GHCB version 0 or 2 -> else EINVAL.
//!   SEV_FEATURES of every VMSA = `vmsa_features | SNPActive`.
//! - KVM_CREATE_GUEST_MEMFD (`kvm_gmem_create`): flags 0, size a nonzero
//!   multiple of 4 KiB -> else EINVAL.
//! - KVM_SET_USER_MEMORY_REGION2 (`kvm_set_memory_region`, `kvm_gmem_bind`):
//!   flags exactly GUEST_MEMFD (READONLY and dirty logging are not allowed
//!   with it), gpa/size/userspace_addr 4 KiB aligned, guest_memfd one of this
//!   VM's, offset 4 KiB aligned, offset + size within the guest_memfd, no
//!   overlapping binding -> else EINVAL (EEXIST for the overlap). The
//!   shared backing is then mapped as a plain memslot.
//! - KVM_SET_MEMORY_ATTRIBUTES: flags 0, only PRIVATE, aligned nonzero range.
//! - SNP_LAUNCH_START (`snp_launch_start`): after INIT2 (else ENOTTY), once
//!   (EINVAL), flags 0, policy only bits 0-17, 19, 20, bits 16 (SMT) and 17
//!   set, SINGLE_SOCKET (20) clear -> else EINVAL; then the firmware model.
//! - SNP_LAUNCH_UPDATE (`snp_launch_update`, `kvm_gmem_populate`,
//!   `sev_gmem_post_populate`): started, flags 0, len a nonzero multiple of
//!   4 KiB, a valid page type (not VMSA), gfn_start in a guest_memfd slot
//!   -> else EINVAL; at most [`MAX_PAGES_PER_CALL`] pages and never past the
//!   slot's end per call; a page not private or already populated stops the
//!   call: nothing done -> -EIO with error 0, else partial success. Each page
//!   goes to the firmware model (failure: -EIO with its status); a refused
//!   CPUID page is copied back into the source buffer (error 0x16).
//!   On success `gfn_start`, `uaddr` (not for ZERO) and `len` are written
//!   back advanced by the pages done.
//! - SNP_LAUNCH_FINISH (`snp_launch_finish`, `snp_launch_update_vmsa`,
//!   `sev_es_sync_vmsa`): started, flags 0; each vCPU's VMSA is built from
//!   the real vCPU's state (see [`vmsa_of`]) and handed with the ID block,
//!   ID auth and host data to the model's LAUNCH_FINISH; its digest is kept.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashSet;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    kvm_debugregs, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, kvm_userspace_memory_region,
    kvm_xcrs,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use umbra_attestation::measure::vmsa::{SevEsSaveArea, VmcbSeg};
use umbra_snp_model::psp::{GuestPageError, GuestPages, LaunchFinishParams, SnpFirmwareModel};
use umbra_vmm::backend::confidential::PageType;
use umbra_vmm::backend::sev::kernel::{SevHostInfo, SevKernel, SevVmKernel};
use umbra_vmm::backend::sev::uapi;
use umbra_vmm::backend::sev::{FwFailure, SevError};
use vmm_sys_util::ioctl::ioctl_with_mut_ref;
use vmm_sys_util::{ioctl_ior_nr, ioctl_iowr_nr};

/// Pages one LAUNCH_UPDATE call processes at most (exercises the caller's
/// resume loop, as `kvm_gmem_populate` stopping at a slot or folio does).
pub const MAX_PAGES_PER_CALL: u64 = 5;
/// What the fake advertises as `KVM_X86_SEV_VMSA_FEATURES`: DebugSwap, as
/// Linux 6.11 does when `debug_swap` is on.
pub const ADVERTISED_VMSA_FEATURES: u64 = 1 << 5;

const KVMIO: u32 = 0xAE;
ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_regs);
ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_sregs);
ioctl_iowr_nr!(KVM_GET_MSRS, KVMIO, 0x88, [u32; 2]);
ioctl_ior_nr!(KVM_GET_XSAVE, KVMIO, 0xA4, [u8; 4096]);
ioctl_ior_nr!(KVM_GET_DEBUGREGS, KVMIO, 0xA1, kvm_debugregs);
ioctl_ior_nr!(KVM_GET_XCRS, KVMIO, 0xA6, kvm_xcrs);

fn errno(e: i32) -> kvm_ioctls::Error {
    kvm_ioctls::Error::new(e)
}

fn fail(e: i32, fw_error: u32) -> FwFailure {
    FwFailure {
        errno: std::io::Error::from_raw_os_error(e),
        fw_error,
    }
}

/// The fake kernel (host side).
#[derive(Default)]
pub struct FakeSevKernel {
    vms: Mutex<Vec<Arc<FakeVm>>>,
}

impl FakeSevKernel {
    /// The VM created last.
    pub fn last_vm(&self) -> Arc<FakeVm> {
        Arc::clone(self.vms.lock().unwrap().last().expect("a VM was created"))
    }
}

impl SevKernel for FakeSevKernel {
    fn probe(&self, kvm: &Kvm) -> Result<SevHostInfo, SevError> {
        // What the fake needs from the real KVM underneath.
        for (cap, name) in [
            (uapi::CAP_GUEST_MEMFD, "KVM_CAP_GUEST_MEMFD"),
            (uapi::CAP_USER_MEMORY2, "KVM_CAP_USER_MEMORY2"),
        ] {
            if kvm.check_extension_raw(cap as libc::c_ulong) <= 0 {
                return Err(SevError::Capability(name));
            }
        }
        // Linux 6.11 publishes no KVM_X86_SNP_POLICY_BITS.
        Ok(SevHostInfo {
            vmsa_features: ADVERTISED_VMSA_FEATURES,
            policy_bits: None,
        })
    }

    fn vm_type(&self) -> u64 {
        uapi::VM_TYPE_DEFAULT
    }

    fn new_vm(&self) -> Arc<dyn SevVmKernel> {
        let vm = Arc::new(FakeVm::default());
        self.vms.lock().unwrap().push(Arc::clone(&vm));
        vm
    }
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    gpa: u64,
    size: u64,
    host: u64,
}

#[derive(Default)]
struct State {
    /// `vmsa_features` after INIT2.
    init: Option<u64>,
    vcpus: Vec<(u32, File)>,
    gmems: Vec<(i32, u64)>,
    /// Guest_memfd bindings: (fd, offset, size).
    bindings: Vec<(i32, u64, u64)>,
    slots: Vec<Slot>,
    private: HashSet<u64>,
    populated: HashSet<u64>,
    model: Option<SnpFirmwareModel>,
    digest: Option<[u8; 48]>,
    vmsas: Vec<Vec<u8>>,
    update_calls: u32,
}

/// One VM of the fake kernel.
#[derive(Default)]
pub struct FakeVm {
    state: Mutex<State>,
}

impl FakeVm {
    /// The digest the firmware model returned at LAUNCH_FINISH.
    pub fn digest(&self) -> Option<[u8; 48]> {
        self.state.lock().unwrap().digest
    }

    /// The VMSA pages built at LAUNCH_FINISH, in vCPU order.
    pub fn vmsas(&self) -> Vec<Vec<u8>> {
        self.state.lock().unwrap().vmsas.clone()
    }

    /// How many LAUNCH_UPDATE ioctls were issued.
    pub fn update_calls(&self) -> u32 {
        self.state.lock().unwrap().update_calls
    }
}

/// The model's view of guest memory: the slots' shared backing.
struct Memory<'a>(&'a [Slot]);

impl Memory<'_> {
    fn host(&self, gpa: u64) -> Result<*mut u8, GuestPageError> {
        self.0
            .iter()
            .find(|s| s.gpa <= gpa && gpa + 4096 <= s.gpa + s.size)
            .map(|s| (s.host + (gpa - s.gpa)) as *mut u8)
            .ok_or(GuestPageError { gpa })
    }
}

impl GuestPages for Memory<'_> {
    fn read_page(&self, gpa: u64, page: &mut [u8; 4096]) -> Result<(), GuestPageError> {
        let p = self.host(gpa)?;
        // SAFETY: `p` is inside a registered slot's host mapping, which the
        // VM's owner keeps alive while the VM exists; 4096 bytes fit.
        unsafe { std::ptr::copy_nonoverlapping(p, page.as_mut_ptr(), 4096) };
        Ok(())
    }

    fn write_page(&self, gpa: u64, page: &[u8; 4096]) -> Result<(), GuestPageError> {
        let p = self.host(gpa)?;
        // SAFETY: as in read_page.
        unsafe { std::ptr::copy_nonoverlapping(page.as_ptr(), p, 4096) };
        Ok(())
    }
}

fn page_type(t: u8) -> Option<PageType> {
    Some(match u32::from(t) {
        kvm_bindings::KVM_SEV_SNP_PAGE_TYPE_NORMAL => PageType::Normal,
        kvm_bindings::KVM_SEV_SNP_PAGE_TYPE_ZERO => PageType::Zero,
        kvm_bindings::KVM_SEV_SNP_PAGE_TYPE_UNMEASURED => PageType::Unmeasured,
        kvm_bindings::KVM_SEV_SNP_PAGE_TYPE_SECRETS => PageType::Secrets,
        kvm_bindings::KVM_SEV_SNP_PAGE_TYPE_CPUID => PageType::Cpuid,
        _ => return None,
    })
}

/// Linux 6.11 `SNP_POLICY_MASK_VALID`: ABI minor/major, SMT, reserved-one,
/// DEBUG, SINGLE_SOCKET.
const POLICY_VALID: u64 = 0x3_FFFF | (1 << 19) | (1 << 20);

impl SevVmKernel for FakeVm {
    fn init2(&self, _vm: &VmFd, init: &mut uapi::kvm_sev_init) -> Result<(), FwFailure> {
        let mut st = self.state.lock().unwrap();
        let bad = !st.vcpus.is_empty()
            || st.init.is_some()
            || init.flags != 0
            || init.vmsa_features & !ADVERTISED_VMSA_FEATURES != 0
            || !matches!(init.ghcb_version, 0 | 2);
        if bad {
            return Err(fail(libc::EINVAL, 0));
        }
        st.init = Some(init.vmsa_features);
        Ok(())
    }

    fn vcpu_created(&self, index: u32, vcpu: &VcpuFd) {
        // SAFETY: dup of a live vCPU fd; the result is checked and owned.
        let fd = unsafe { libc::dup(vcpu.as_raw_fd()) };
        assert!(fd >= 0, "dup of a vCPU fd");
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        self.state.lock().unwrap().vcpus.push((index, file));
    }

    fn create_guest_memfd(
        &self,
        _vm: &VmFd,
        gmem: uapi::kvm_create_guest_memfd,
    ) -> Result<OwnedFd, kvm_ioctls::Error> {
        if gmem.flags != 0 || gmem.size == 0 || !gmem.size.is_multiple_of(4096) {
            return Err(errno(libc::EINVAL));
        }
        // SAFETY: memfd_create takes a NUL-terminated name; result checked.
        let fd = unsafe { libc::memfd_create(c"fake-guest-memfd".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(errno(libc::ENOMEM));
        }
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ftruncate on our own fd.
        if unsafe { libc::ftruncate(fd, gmem.size as i64) } != 0 {
            return Err(errno(libc::ENOMEM));
        }
        self.state.lock().unwrap().gmems.push((fd, gmem.size));
        Ok(owned)
    }

    unsafe fn set_user_memory_region2(
        &self,
        vm: &VmFd,
        r: uapi::kvm_userspace_memory_region2,
    ) -> Result<(), kvm_ioctls::Error> {
        let mut st = self.state.lock().unwrap();
        let aligned = |v: u64| v.is_multiple_of(4096);
        if r.flags != uapi::MEM_GUEST_MEMFD
            || !aligned(r.guest_phys_addr)
            || !aligned(r.memory_size)
            || !aligned(r.userspace_addr)
            || !aligned(r.guest_memfd_offset)
        {
            return Err(errno(libc::EINVAL));
        }
        let fd = r.guest_memfd as i32;
        let Some(&(_, gsize)) = st.gmems.iter().find(|(f, _)| *f == fd) else {
            return Err(errno(libc::EINVAL));
        };
        let (off, size) = (r.guest_memfd_offset, r.memory_size);
        if off.checked_add(size).is_none_or(|end| end > gsize) {
            return Err(errno(libc::EINVAL));
        }
        if st
            .bindings
            .iter()
            .any(|&(f, o, s)| f == fd && off < o + s && o < off + size)
        {
            return Err(errno(libc::EEXIST));
        }
        let plain = kvm_userspace_memory_region {
            slot: r.slot,
            flags: 0,
            guest_phys_addr: r.guest_phys_addr,
            memory_size: size,
            userspace_addr: r.userspace_addr,
        };
        // SAFETY: this function's contract: the shared backing outlives the VM.
        unsafe { vm.set_user_memory_region(plain) }?;
        st.bindings.push((fd, off, size));
        st.slots.push(Slot {
            gpa: r.guest_phys_addr,
            size,
            host: r.userspace_addr,
        });
        Ok(())
    }

    fn set_memory_attributes(
        &self,
        _vm: &VmFd,
        a: uapi::kvm_memory_attributes,
    ) -> Result<(), kvm_ioctls::Error> {
        if a.flags != 0
            || a.attributes & !uapi::MEMORY_ATTRIBUTE_PRIVATE != 0
            || a.size == 0
            || !a.address.is_multiple_of(4096)
            || !a.size.is_multiple_of(4096)
            || a.address.checked_add(a.size).is_none()
        {
            return Err(errno(libc::EINVAL));
        }
        let mut st = self.state.lock().unwrap();
        for gfn in a.address / 4096..(a.address + a.size) / 4096 {
            if a.attributes != 0 {
                st.private.insert(gfn);
            } else {
                st.private.remove(&gfn);
            }
        }
        Ok(())
    }

    fn snp_launch_start(
        &self,
        _vm: &VmFd,
        s: &mut uapi::kvm_sev_snp_launch_start,
    ) -> Result<(), FwFailure> {
        let mut st = self.state.lock().unwrap();
        if st.init.is_none() {
            return Err(fail(libc::ENOTTY, 0));
        }
        let p = s.policy;
        if st.model.is_some()
            || s.flags != 0
            || p & !POLICY_VALID != 0
            || p & (1 << 17) == 0
            || p & (1 << 16) == 0
            || p & (1 << 20) != 0
        {
            return Err(fail(libc::EINVAL, 0));
        }
        let ranges: Vec<(u64, u64)> = st.slots.iter().map(|s| (s.gpa, s.size)).collect();
        let mut model = SnpFirmwareModel::new(&ranges, None, Default::default())
            .map_err(|_| fail(libc::ENOMEM, 0))?;
        model
            .launch_start(p, s.gosvw)
            .map_err(|status| fail(libc::EIO, status as u32))?;
        st.model = Some(model);
        Ok(())
    }

    fn snp_launch_update(
        &self,
        _vm: &VmFd,
        u: &mut uapi::kvm_sev_snp_launch_update,
    ) -> Result<(), FwFailure> {
        let mut guard = self.state.lock().unwrap();
        let st = &mut *guard;
        st.update_calls += 1;
        let Some(model) = st.model.as_mut() else {
            return Err(fail(libc::EINVAL, 0));
        };
        let Some(ty) = page_type(u.type_) else {
            return Err(fail(libc::EINVAL, 0));
        };
        if u.flags != 0 || u.len == 0 || !u.len.is_multiple_of(4096) {
            return Err(fail(libc::EINVAL, 0));
        }
        let gpa = u.gfn_start.wrapping_mul(4096);
        let Some(slot) = st
            .slots
            .iter()
            .find(|s| s.gpa <= gpa && gpa < s.gpa + s.size)
            .copied()
        else {
            return Err(fail(libc::EINVAL, 0));
        };
        let npages = (u.len / 4096)
            .min((slot.gpa + slot.size - gpa) / 4096)
            .min(MAX_PAGES_PER_CALL);
        let memory = Memory(&st.slots);
        let zero = ty == PageType::Zero;
        let mut done = 0;
        let mut error = Ok(());
        while done < npages {
            let gfn = u.gfn_start + done;
            if !st.private.contains(&gfn) {
                error = Err(fail(libc::EINVAL, 0));
                break;
            }
            if st.populated.contains(&gfn) {
                error = Err(fail(libc::EEXIST, 0));
                break;
            }
            let src = (u.uaddr + done * 4096) as *mut u8;
            let mut page = [0u8; 4096];
            if !zero {
                // SAFETY: the caller's `uaddr .. + len` is its live source
                // buffer (the ioctl's contract; the kernel copy_from_user()s).
                unsafe { std::ptr::copy_nonoverlapping(src, page.as_mut_ptr(), 4096) };
            }
            let contents = (!zero).then_some(&page[..]);
            if let Err(status) = model.launch_update(gfn * 4096, 4096, ty, contents, &memory) {
                if ty == PageType::Cpuid && status as u32 == uapi::SEV_RET_INVALID_PARAM {
                    let mut fixed = [0u8; 4096];
                    memory.read_page(gfn * 4096, &mut fixed).unwrap();
                    // SAFETY: as above; the kernel copy_to_user()s the page.
                    unsafe { std::ptr::copy_nonoverlapping(fixed.as_ptr(), src, 4096) };
                }
                error = Err(fail(libc::EIO, status as u32));
                break;
            }
            st.populated.insert(gfn);
            done += 1;
        }
        if done == 0 {
            // snp_launch_update: a failed kvm_gmem_populate is -EIO with the
            // firmware status of the post-populate callback (0 if none ran).
            let fw = error.err().map_or(0, |f| f.fw_error);
            return Err(fail(libc::EIO, fw));
        }
        u.gfn_start += done;
        u.len -= done * 4096;
        if !zero {
            u.uaddr += done * 4096;
        }
        Ok(())
    }

    fn snp_launch_finish(
        &self,
        _vm: &VmFd,
        f: &mut uapi::kvm_sev_snp_launch_finish,
    ) -> Result<(), FwFailure> {
        let mut guard = self.state.lock().unwrap();
        let st = &mut *guard;
        let Some(features) = st.init else {
            return Err(fail(libc::ENOTTY, 0));
        };
        if st.model.is_none() || f.flags != 0 {
            return Err(fail(libc::EINVAL, 0));
        }
        let sev_features = features | uapi::SEV_FEATURE_SNP_ACTIVE;
        let mut vmsas = Vec::new();
        for (index, fd) in &st.vcpus {
            let area = vmsa_of(fd, sev_features).unwrap_or_else(|e| panic!("vCPU {index}: {e}"));
            vmsas.push(area.as_page().to_vec());
        }
        let read = |addr: u64, len: usize| {
            let mut v = vec![0u8; len];
            // SAFETY: the caller's ID block / ID auth buffers of the sizes
            // the UAPI fixes (the kernel copy_from_user()s them).
            unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, v.as_mut_ptr(), len) };
            v
        };
        let (id_block, id_auth) = if f.id_block_en != 0 {
            (
                Some(read(f.id_block_uaddr, uapi::SNP_ID_BLOCK_SIZE)),
                Some(read(f.id_auth_uaddr, uapi::SNP_ID_AUTH_SIZE)),
            )
        } else {
            (None, None)
        };
        let params = LaunchFinishParams {
            id_block,
            id_auth,
            auth_key_en: f.auth_key_en != 0,
            host_data: f.host_data,
            vmsa_pages: vmsas.clone(),
        };
        let model = st.model.as_mut().expect("checked above");
        let digest = model
            .launch_finish(&params)
            .map_err(|status| fail(libc::EIO, status as u32))?;
        st.digest = Some(digest);
        st.vmsas = vmsas;
        Ok(())
    }
}

/// VMCB segment attributes from a `kvm_segment` (svm_set_segment).
fn seg(s: &kvm_segment) -> VmcbSeg {
    let attrib = u16::from(s.type_ & 0xF)
        | u16::from(s.s & 1) << 4
        | u16::from(s.dpl & 3) << 5
        | u16::from(s.present & 1) << 7
        | u16::from(s.avl & 1) << 8
        | u16::from(s.l & 1) << 9
        | u16::from(s.db & 1) << 10
        | u16::from(s.g & 1) << 11;
    VmcbSeg {
        selector: s.selector,
        attrib,
        limit: s.limit,
        base: s.base,
    }
}

fn get<T: Default>(fd: &File, nr: libc::c_ulong, what: &str) -> Result<T, String> {
    let mut v = T::default();
    // SAFETY: `nr` is a KVM_GET_* vCPU ioctl whose argument is a `T` the
    // kernel fills; `v` is live and exclusively borrowed for the call.
    let ret = unsafe { ioctl_with_mut_ref(fd, nr, &mut v) };
    if ret < 0 {
        return Err(format!("{what}: {}", std::io::Error::last_os_error()));
    }
    Ok(v)
}

/// The VMSA KVM builds for a vCPU at LAUNCH_FINISH (sev_es_sync_vmsa on the
/// VMCB save area as svm.c keeps it), from the vCPU's state as KVM reports
/// it: segments, descriptor tables, CR0 (CD/NW cleared: the CD_NW_CLEARED
/// quirk of svm_set_cr0), CR3, CR4 | MCE (svm_set_cr4 adds the host's MCE),
/// EFER | SVME (svm_set_efer), DR6/DR7, RFLAGS, RIP and every GPR, PAT,
/// XCR0, the x87/SSE/AVX state from KVM_GET_XSAVE (FCW, FSW, FTW, FOP, FIP,
/// FDP, MXCSR, ST0-7, XMM0-15, YMM0-15 upper halves), SEV_FEATURES. Not read
/// (zero at reset and left zero): the other MSR-backed fields (STAR, LSTAR,
/// SYSENTER_*, ...), PKRU, XSS.
pub fn vmsa_of(fd: &File, sev_features: u64) -> Result<SevEsSaveArea, String> {
    let r: kvm_regs = get(fd, KVM_GET_REGS(), "KVM_GET_REGS")?;
    let s: kvm_sregs = get(fd, KVM_GET_SREGS(), "KVM_GET_SREGS")?;
    let d: kvm_debugregs = get(fd, KVM_GET_DEBUGREGS(), "KVM_GET_DEBUGREGS")?;
    let x: kvm_xcrs = get(fd, KVM_GET_XCRS(), "KVM_GET_XCRS")?;
    // The x87/SSE state from the guest FPU buffer (KVM_GET_FPU leaves
    // MXCSR out), in the FXSAVE layout of the XSAVE legacy area.
    let mut xs = Box::new([0u8; 4096]);
    // SAFETY: KVM_GET_XSAVE fills a 4096-byte `struct kvm_xsave`; `xs` is
    // that size, live and exclusively borrowed for the call.
    if unsafe { ioctl_with_mut_ref(fd, KVM_GET_XSAVE(), &mut *xs) } < 0 {
        return Err(format!(
            "KVM_GET_XSAVE: {}",
            std::io::Error::last_os_error()
        ));
    }
    let u16_at = |o: usize| u16::from_le_bytes([xs[o], xs[o + 1]]);
    let u64_at = |o: usize| u64::from_le_bytes(xs[o..o + 8].try_into().unwrap());
    let pat = read_msr(fd, 0x277)?;
    let mut v = SevEsSaveArea::zeroed();
    (v.es, v.cs, v.ss, v.ds, v.fs, v.gs) = (
        seg(&s.es),
        seg(&s.cs),
        seg(&s.ss),
        seg(&s.ds),
        seg(&s.fs),
        seg(&s.gs),
    );
    v.ldtr = seg(&s.ldt);
    v.tr = seg(&s.tr);
    v.gdtr = VmcbSeg {
        selector: 0,
        attrib: 0,
        limit: u32::from(s.gdt.limit),
        base: s.gdt.base,
    };
    v.idtr = VmcbSeg {
        selector: 0,
        attrib: 0,
        limit: u32::from(s.idt.limit),
        base: s.idt.base,
    };
    v.cr0 = s.cr0 & !(0x6000_0000);
    v.cr2 = s.cr2;
    v.cr3 = s.cr3;
    v.cr4 = s.cr4 | 0x40;
    v.efer = s.efer | 0x1000;
    v.dr6 = d.dr6;
    v.dr7 = d.dr7;
    v.rflags = r.rflags;
    v.rip = r.rip;
    (v.rax, v.rbx, v.rcx, v.rdx, v.rsp, v.rbp, v.rsi, v.rdi) =
        (r.rax, r.rbx, r.rcx, r.rdx, r.rsp, r.rbp, r.rsi, r.rdi);
    (v.r8, v.r9, v.r10, v.r11, v.r12, v.r13, v.r14, v.r15) =
        (r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15);
    v.g_pat = pat;
    v.xcr0 = x
        .xcrs
        .iter()
        .take(x.nr_xcrs as usize)
        .find(|e| e.xcr == 0)
        .map_or(1, |e| e.value);
    v.x87_fcw = u16_at(0);
    v.x87_fsw = u16_at(2);
    v.x87_ftw = u16::from(xs[4]);
    v.x87_fop = u16_at(6);
    v.x87_rip = u64_at(8);
    v.x87_dp = u64_at(16);
    v.mxcsr = u32::from_le_bytes(xs[24..28].try_into().unwrap());
    for i in 0..8 {
        v.fpreg_x87[i * 10..i * 10 + 10].copy_from_slice(&xs[32 + i * 16..32 + i * 16 + 10]);
    }
    v.fpreg_xmm.copy_from_slice(&xs[160..160 + 256]);
    // XSTATE_BV bit 2: the YMM upper halves (standard format, offset 576).
    if u64_at(512) & 4 != 0 {
        v.fpreg_ymm.copy_from_slice(&xs[576..576 + 256]);
    }
    v.sev_features = sev_features;
    Ok(v)
}

/// `struct kvm_msrs` with one entry.
#[repr(C)]
#[derive(Default)]
struct OneMsr {
    nmsrs: u32,
    pad: u32,
    entry: kvm_msr_entry,
}

fn read_msr(fd: &File, index: u32) -> Result<u64, String> {
    let mut m = OneMsr {
        nmsrs: 1,
        entry: kvm_msr_entry {
            index,
            ..Default::default()
        },
        ..Default::default()
    };
    // SAFETY: KVM_GET_MSRS reads `nmsrs` and fills that many entries after
    // the 8-byte header; `m` holds exactly one and is exclusively borrowed.
    let ret = unsafe { ioctl_with_mut_ref(fd, KVM_GET_MSRS(), &mut m) };
    if ret != 1 {
        return Err(format!(
            "KVM_GET_MSRS({index:#x}): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(m.entry.data)
}
