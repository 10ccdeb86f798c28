//! `umbra-attest measure`: a drop-in replacement for `sev-snp-measure`.
//!
//! Same flags, same stdout (hex or base64 digest, `-v` adds the
//! "Calculated ... guest measurement:" prefix), errors as one `Error: ...`
//! line on stderr. Usage errors exit 2, measurement errors exit 1.

use base64::Engine as _;
use clap::Args;

use umbra_attestation::measure::{
    self, ovmf::FOUR_GIB, vcpu_types, FirmwareImage, KernelHashes, MeasureInputs, SvsmInputs,
    VcpuSaveAreas, VmmType, LD_SIZE, PAGE_SIZE,
};

#[derive(Args, Debug)]
pub struct MeasureArgs {
    /// Guest mode: sev, seves, snp, snp:ovmf-hash or snp:svsm (required).
    #[arg(long)]
    mode: Option<String>,
    /// Print "Calculated <MODE> guest measurement: " before the digest.
    #[arg(short, long)]
    verbose: bool,
    /// Number of guest vCPUs.
    #[arg(long, value_name = "N")]
    vcpus: Option<u32>,
    /// Type of guest vCPU (EPYC, EPYC-v1..v4, EPYC-IBPB, EPYC-Rome[-v1..v3],
    /// EPYC-Milan[-v1,-v2], EPYC-Genoa[-v1], EPYC-Turin).
    #[arg(long, value_name = "CPUTYPE")]
    vcpu_type: Option<String>,
    /// Guest vCPU signature value (decimal or 0x-prefixed).
    #[arg(long, value_name = "VALUE")]
    vcpu_sig: Option<String>,
    /// Guest vCPU family.
    #[arg(long, value_name = "FAMILY")]
    vcpu_family: Option<u32>,
    /// Guest vCPU model.
    #[arg(long, value_name = "MODEL")]
    vcpu_model: Option<u32>,
    /// Guest vCPU stepping.
    #[arg(long, value_name = "STEPPING")]
    vcpu_stepping: Option<u32>,
    /// Type of guest VMM (QEMU, ec2, gce).
    #[arg(long, value_name = "VMMTYPE", default_value = "QEMU")]
    vmm_type: String,
    /// OVMF-format firmware file to measure (OVMF or umbra's firmware; required).
    #[arg(long, value_name = "PATH")]
    ovmf: Option<String>,
    /// Kernel file to hash (measured direct boot).
    #[arg(long, value_name = "PATH")]
    kernel: Option<String>,
    /// Initrd file to hash (use with --kernel).
    #[arg(long, value_name = "PATH")]
    initrd: Option<String>,
    /// Kernel command line to hash (use with --kernel).
    #[arg(long, value_name = "CMDLINE", allow_hyphen_values = true)]
    append: Option<String>,
    /// Guest features (VMSA SEV_FEATURES), default 0x1.
    #[arg(long, value_name = "VALUE", default_value = "0x1")]
    guest_features: String,
    /// Measurement output format: hex or base64.
    #[arg(long, value_name = "FORMAT", default_value = "hex")]
    output_format: String,
    /// Precalculated hash of the OVMF binary (hex string).
    #[arg(long, value_name = "HASH")]
    snp_ovmf_hash: Option<String>,
    /// Write measured VMSAs to vmsa<N>.bin (seves, snp, and snp:svsm modes only).
    #[arg(long)]
    dump_vmsa: bool,
    /// Print the SNP launch plan (page type, GPA, length per step) instead of
    /// the digest: the LAUNCH_UPDATE sequence a VMM must issue (snp mode).
    #[arg(long)]
    show_plan: bool,
    /// SVSM binary (snp:svsm mode).
    #[arg(long, value_name = "PATH")]
    svsm: Option<String>,
    /// Size of the OVMF_VARS file in bytes (snp:svsm mode; conflicts with --vars-file).
    #[arg(long, value_name = "SIZE", conflicts_with = "vars_file")]
    vars_size: Option<u64>,
    /// OVMF_VARS file (snp:svsm mode; conflicts with --vars-size).
    #[arg(long, value_name = "PATH")]
    vars_file: Option<String>,
}

/// A failure with its exit code: 2 for usage errors, 1 for the rest.
struct Fail(i32, String);

fn usage(msg: impl Into<String>) -> Fail {
    Fail(2, msg.into())
}

fn runtime(msg: impl Into<String>) -> Fail {
    Fail(1, msg.into())
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn measure_err(e: measure::MeasureError) -> Fail {
    runtime(chain(&e))
}

/// Parses an integer the way Python's `int(s, 0)` does (0x / 0o / 0b prefixes).
pub(crate) fn parse_auto_int(s: &str) -> Option<u64> {
    let t = s.trim().replace('_', "");
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r.to_string()),
        None => (false, t.strip_prefix('+').unwrap_or(&t).to_string()),
    };
    if neg {
        return None;
    }
    let lower = t.to_ascii_lowercase();
    if let Some(h) = lower.strip_prefix("0x") {
        u64::from_str_radix(h, 16).ok()
    } else if let Some(o) = lower.strip_prefix("0o") {
        u64::from_str_radix(o, 8).ok()
    } else if let Some(b) = lower.strip_prefix("0b") {
        u64::from_str_radix(b, 2).ok()
    } else {
        lower.parse().ok()
    }
}

/// Bytes kept from the end of a streamed firmware file: the footer table (at
/// most 64 KiB) and, in every OVMF-format image seen, the SEV metadata.
const TAIL: usize = 128 * 1024;

/// A firmware file read for SNP: the SHA-384 of every 4 KiB page, computed
/// through one small reused buffer (no megabytes of fresh memory to fault
/// in), and the file's tail for the footer table.
struct Streamed {
    tail: Vec<u8>,
    size: usize,
    digests: Vec<[u8; LD_SIZE]>,
}

fn read_streaming(path: &str) -> Result<Streamed, Fail> {
    use std::io::Read as _;
    let fail = |e: std::io::Error| runtime(format!("cannot read OVMF file '{path}': {e}"));
    let mut f = std::fs::File::open(path).map_err(fail)?;
    let size = usize::try_from(f.metadata().map_err(fail)?.len())
        .map_err(|_| runtime(format!("OVMF file '{path}' is too large")))?;
    let tail_start = size.saturating_sub(TAIL);
    let mut tail = Vec::with_capacity(size - tail_start);
    let mut digests = Vec::with_capacity(size / PAGE_SIZE);
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = 0usize;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match f.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(fail(e)),
            }
        }
        if filled == 0 {
            break;
        }
        let chunk = &buf[..filled];
        digests.extend(chunk.chunks_exact(PAGE_SIZE).map(measure::page_digest));
        let end = pos + filled;
        if end > tail_start {
            tail.extend_from_slice(&chunk[tail_start.saturating_sub(pos)..]);
        }
        pos = end;
        if filled < buf.len() {
            break;
        }
    }
    if pos != size {
        return Err(runtime(format!(
            "OVMF file '{path}' changed while being read"
        )));
    }
    Ok(Streamed {
        tail,
        size,
        digests,
    })
}

fn read(what: &str, path: &str) -> Result<Vec<u8>, Fail> {
    std::fs::read(path).map_err(|e| runtime(format!("cannot read {what} file '{path}': {e}")))
}

/// Treats an empty string as "not given", as sev-snp-measure's truthiness checks do.
fn given(o: &Option<String>) -> Option<&str> {
    o.as_deref().filter(|s| !s.is_empty())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Sev,
    SevEs,
    Snp,
    SnpOvmfHash,
    SnpSvsm,
}

impl Mode {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "sev" => Mode::Sev,
            "seves" => Mode::SevEs,
            "snp" => Mode::Snp,
            "snp:ovmf-hash" => Mode::SnpOvmfHash,
            "snp:svsm" => Mode::SnpSvsm,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Sev => "SEV",
            Mode::SevEs => "SEV_ES",
            Mode::Snp | Mode::SnpOvmfHash => "SEV_SNP",
            Mode::SnpSvsm => "SEV_SNP_SVSM",
        }
    }
}

fn vcpu_sig(a: &MeasureArgs, mode: Mode, vmm: VmmType) -> Result<u32, Fail> {
    if mode == Mode::Sev {
        return Ok(0);
    }
    if let Some(f) = a.vcpu_family.filter(|&f| f != 0) {
        let (Some(m), Some(s)) = (a.vcpu_model, a.vcpu_stepping) else {
            return Err(usage(
                "--vcpu-family requires --vcpu-model and --vcpu-stepping",
            ));
        };
        return Ok(vcpu_types::cpu_sig(f, m, s));
    }
    if let Some(s) = given(&a.vcpu_sig) {
        let v = parse_auto_int(s)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| usage(format!("invalid --vcpu-sig value: '{s}'")))?;
        if v != 0 {
            return Ok(v);
        }
    }
    if let Some(t) = &a.vcpu_type {
        return vcpu_types::vcpu_sig_of(t).ok_or_else(|| {
            let names: Vec<&str> = vcpu_types::VCPU_TYPES.iter().map(|(n, _)| *n).collect();
            usage(format!(
                "unknown --vcpu-type '{t}' (choose from {})",
                names.join(", ")
            ))
        });
    }
    if vmm == VmmType::Qemu {
        return Err(usage(format!(
            "missing --vcpu-type or --vcpu-sig or --vcpu-family in guest mode '{}'",
            a.mode.as_deref().unwrap_or("")
        )));
    }
    Ok(0)
}

fn parse_ovmf_hash(s: &str) -> Result<[u8; LD_SIZE], Fail> {
    let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let bad = || {
        runtime(format!(
            "invalid --snp-ovmf-hash '{s}': expected 96 hex digits"
        ))
    };
    if clean.len() != 2 * LD_SIZE {
        return Err(bad());
    }
    let mut out = [0u8; LD_SIZE];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(clean.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(out)
}

fn print_digest(ld: &[u8], mode: Mode, format: &str, verbose: bool) {
    let m = if format == "base64" {
        base64::engine::general_purpose::STANDARD.encode(ld)
    } else {
        ld.iter().map(|b| format!("{b:02x}")).collect()
    };
    if verbose {
        umbra_attestation::outln!("Calculated {} guest measurement: {m}", mode.name());
    } else {
        umbra_attestation::outln!("{m}");
    }
}

fn dump_vmsas(pages: impl Iterator<Item = Vec<u8>>) -> Result<(), Fail> {
    for (i, p) in pages.enumerate() {
        let name = format!("vmsa{i}.bin");
        std::fs::write(&name, p).map_err(|e| runtime(format!("cannot write {name}: {e}")))?;
    }
    Ok(())
}

fn execute(a: &MeasureArgs) -> Result<(), Fail> {
    let mode_s = a
        .mode
        .as_deref()
        .ok_or_else(|| usage("the following arguments are required: --mode"))?;
    let mode = Mode::parse(mode_s).ok_or_else(|| {
        usage(format!(
            "invalid --mode '{mode_s}' (choose from 'sev', 'seves', 'snp', 'snp:ovmf-hash', 'snp:svsm')"
        ))
    })?;
    let ovmf_path = a
        .ovmf
        .as_deref()
        .ok_or_else(|| usage("the following arguments are required: --ovmf"))?;
    if a.output_format != "hex" && a.output_format != "base64" {
        return Err(usage(format!(
            "invalid --output-format '{}' (choose from 'hex', 'base64')",
            a.output_format
        )));
    }
    let guest_features = parse_auto_int(&a.guest_features).ok_or_else(|| {
        usage(format!(
            "invalid --guest-features value: '{}'",
            a.guest_features
        ))
    })?;

    if mode == Mode::SnpOvmfHash {
        let data = read("OVMF", ovmf_path)?;
        let fw = FirmwareImage::parse(&data).map_err(|e| measure_err(e.into()))?;
        let ld = measure::snp_ovmf_hash(&fw).map_err(measure_err)?;
        print_digest(&ld, mode, "hex", false);
        return Ok(());
    }
    if given(&a.initrd).is_some() && a.kernel.is_none() {
        return Err(usage("--kernel required when using --initrd"));
    }
    if given(&a.append).is_some() && a.kernel.is_none() {
        return Err(usage("--kernel required when using --append"));
    }
    if mode != Mode::Sev && a.vcpus.is_none() {
        return Err(usage(format!("missing --vcpus N in guest mode '{mode_s}'")));
    }
    let vmm: VmmType = a.vmm_type.parse().map_err(usage)?;
    let sig = vcpu_sig(a, mode, vmm)?;
    let vcpus = a.vcpus.unwrap_or(0);
    if a.dump_vmsa && !matches!(mode, Mode::SevEs | Mode::Snp | Mode::SnpSvsm) {
        return Err(usage("--dump-vmsa is not available in the selected mode"));
    }
    let ovmf_hash = given(&a.snp_ovmf_hash).map(parse_ovmf_hash).transpose()?;
    if ovmf_hash.is_some() && mode != Mode::Snp {
        return Err(measure_err(measure::MeasureError::OvmfHashMode));
    }

    if mode == Mode::SnpSvsm {
        let vars_size = if let Some(f) = given(&a.vars_file) {
            std::fs::metadata(f)
                .map_err(|e| runtime(format!("cannot read vars file '{f}': {e}")))?
                .len()
        } else {
            match a.vars_size {
                Some(s) if s != 0 => s,
                _ => return Err(usage("snp:svsm mode requires --vars-size or --vars-file")),
            }
        };
        if vmm != VmmType::Qemu {
            return Err(runtime("SVSM mode is only implemented for QEMU"));
        }
        let svsm_path = given(&a.svsm).ok_or_else(|| usage("snp:svsm mode requires --svsm"))?;
        let data = read("OVMF", ovmf_path)?;
        let fw = FirmwareImage::parse(&data).map_err(|e| measure_err(e.into()))?;
        let svsm_data = read("SVSM", svsm_path)?;
        let end = fw.gpa().checked_sub(vars_size).ok_or_else(|| {
            runtime(format!(
                "--vars-size {vars_size} is larger than the OVMF GPA"
            ))
        })?;
        let svsm = FirmwareImage::parse_at(&svsm_data, end).map_err(|e| measure_err(e.into()))?;
        let inp = SvsmInputs {
            firmware: &fw,
            svsm: &svsm,
            vcpus,
            vcpu_sig: sig,
        };
        let ld = measure::svsm_launch_digest(&inp).map_err(measure_err)?;
        if a.dump_vmsa {
            let area = measure::svsm_save_area(&inp).map_err(measure_err)?;
            dump_vmsas((0..vcpus).map(|_| area.as_page().to_vec()))?;
        }
        print_digest(&ld, mode, &a.output_format, a.verbose);
        return Ok(());
    }

    // SNP hashes the firmware page by page while reading it; the other
    // modes hash the whole image with SHA-256 and read it whole.
    let streamed = if mode == Mode::Snp {
        read_streaming(ovmf_path)?
    } else {
        let tail = read("OVMF", ovmf_path)?;
        let size = tail.len();
        Streamed {
            tail,
            size,
            digests: Vec::new(),
        }
    };
    let full: Vec<u8>;
    let fw = match FirmwareImage::parse_tail(&streamed.tail, streamed.size, FOUR_GIB) {
        Ok(fw) => fw,
        // Metadata outside the tail (or a damaged image): parse it whole,
        // which also yields the exact error.
        Err(_) if streamed.tail.len() < streamed.size => {
            full = read("OVMF", ovmf_path)?;
            FirmwareImage::parse(&full).map_err(|e| measure_err(e.into()))?
        }
        Err(e) => return Err(measure_err(e.into())),
    };
    let kernel_hashes = match given(&a.kernel) {
        None => None,
        Some(k) => {
            let kernel = read("kernel", k)?;
            let initrd = given(&a.initrd).map(|p| read("initrd", p)).transpose()?;
            Some(KernelHashes::new(
                &kernel,
                initrd.as_deref(),
                a.append.as_deref(),
            ))
        }
    };
    let inp = MeasureInputs {
        firmware: &fw,
        vcpus,
        vcpu_sig: sig,
        guest_features,
        vmm_type: vmm,
        kernel_hashes,
        ovmf_hash,
        firmware_page_digests: (mode == Mode::Snp).then_some(streamed.digests.as_slice()),
    };
    if a.show_plan {
        if mode != Mode::Snp {
            return Err(usage("--show-plan is only available in snp mode"));
        }
        let opts = measure::PlanOptions {
            vmm_type: vmm,
            kernel_hashes: inp.kernel_hashes.is_some(),
            include_firmware: inp.ovmf_hash.is_none(),
            vcpus,
        };
        for s in measure::snp_launch_steps(&fw, &opts).map_err(measure_err)? {
            umbra_attestation::outln!("{:?} {:#x} {:#x}", s.page_type, s.gpa, s.len);
        }
        return Ok(());
    }
    let ld: Vec<u8> = match mode {
        Mode::Snp => measure::snp_launch_digest(&inp)
            .map_err(measure_err)?
            .to_vec(),
        Mode::SevEs => measure::seves_digest(&inp).map_err(measure_err)?.to_vec(),
        _ => measure::sev_digest(&fw, inp.kernel_hashes.as_ref())
            .map_err(measure_err)?
            .to_vec(),
    };
    if a.dump_vmsa {
        let features = if mode == Mode::Snp { guest_features } else { 0 };
        let areas = VcpuSaveAreas::new(&fw, features, sig, vmm).map_err(measure_err)?;
        let pages = (0..vcpus)
            .map(|i| areas.get(i).map(|s| s.as_page().to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(measure_err)?;
        dump_vmsas(pages.into_iter())?;
    }
    print_digest(&ld, mode, &a.output_format, a.verbose);
    Ok(())
}

/// Runs `umbra-attest measure`; returns the exit code.
pub fn run(args: MeasureArgs) -> i32 {
    match execute(&args) {
        Ok(()) => 0,
        Err(Fail(code, msg)) => {
            umbra_attestation::errln!("Error: {msg}");
            code
        }
    }
}
