//! The SNP launch: a pure plan (which GPA ranges get which page type, the
//! vCPU save areas, policy, ID block, host data) and an engine that drives
//! any backend's confidential-launch interface through it as a typestate:
//! `Launch::start` -> `update`* -> `finish`. Calling them out of order does
//! not compile.
//!
//! The page order comes from `umbra_attestation::measure::snp_launch_steps`,
//! the same list the measurement tool walks, so `--print-measurement` and the
//! launch cannot drift apart.

use crate::backend::confidential::{
    ConfidentialLaunch, LaunchError, LaunchFinishParams, LaunchFinished, LaunchStartParams,
    LaunchUpdate,
};
use std::marker::PhantomData;
use thiserror::Error;
use umbra_attestation::measure::ovmf::FirmwareImage;
use umbra_attestation::measure::vcpu_types::vcpu_sig_of;
use umbra_attestation::measure::vmsa::VmmType;
use umbra_attestation::measure::{
    snp_launch_digest, snp_launch_steps, LaunchStep, MeasureError, MeasureInputs, PlanOptions,
    StepSource, VcpuSaveAreas,
};

/// Errors while building a launch plan.
#[derive(Debug, Error)]
pub enum PlanError {
    /// The firmware image has no usable footer table or SEV metadata.
    #[error("the firmware image cannot be launched as an SNP guest")]
    Firmware(#[source] umbra_attestation::measure::ovmf::OvmfError),
    /// The firmware image carries no OVMF footer table (so no SEV metadata).
    #[error("the firmware image has no OVMF footer table with SEV metadata")]
    NoFooterTable,
    /// The measurement library refused the inputs.
    #[error("cannot compute the launch plan")]
    Measure(#[source] MeasureError),
    /// The vCPU type is unknown.
    #[error("unknown vCPU type '{0}' (use a QEMU CPU model name such as EPYC-v4, EPYC-Milan, EPYC-Genoa)")]
    VcpuType(String),
    /// The guest policy lacks the reserved-must-be-one bit 17.
    #[error("guest policy {0:#x} must have bit 17 set (SNP ABI §4.3)")]
    Policy(u64),
}

/// What a launch is asked to produce.
#[derive(Clone, Debug)]
pub struct LaunchOptions {
    /// vCPU count.
    pub vcpus: u32,
    /// QEMU CPU model name (`EPYC-v4` by default, as sev-snp-measure).
    pub vcpu_type: String,
    /// VMSA SEV_FEATURES (`0x1`, SNPActive, by default).
    pub guest_features: u64,
    /// Guest policy.
    pub policy: u64,
    /// HOST_DATA.
    pub host_data: [u8; 32],
    /// ID block (96 bytes) for LAUNCH_FINISH.
    pub id_block: Option<Vec<u8>>,
    /// ID auth (4096 bytes).
    pub id_auth: Option<Vec<u8>>,
}

/// Default guest policy: SMT allowed, bit 17 (reserved, must be one).
pub const DEFAULT_POLICY: u64 = 0x3_0000;

/// A launch plan over one firmware image.
pub struct LaunchPlan<'a> {
    firmware: FirmwareImage<'a>,
    steps: Vec<LaunchStep>,
    save_areas: VcpuSaveAreas,
    vcpu_sig: u32,
    options: LaunchOptions,
}

impl<'a> LaunchPlan<'a> {
    /// Plans the launch of `image` (mapped to end at 4 GiB).
    pub fn new(image: &'a [u8], options: LaunchOptions) -> Result<Self, PlanError> {
        if options.policy & (1 << 17) == 0 {
            return Err(PlanError::Policy(options.policy));
        }
        let firmware = FirmwareImage::parse(image).map_err(PlanError::Firmware)?;
        if !firmware.has_footer_table() || firmware.sections().is_empty() {
            return Err(PlanError::NoFooterTable);
        }
        let vcpu_sig = vcpu_sig_of(&options.vcpu_type)
            .ok_or_else(|| PlanError::VcpuType(options.vcpu_type.clone()))?;
        let plan = PlanOptions {
            vmm_type: VmmType::Qemu,
            kernel_hashes: false,
            include_firmware: true,
            vcpus: options.vcpus,
        };
        let steps = snp_launch_steps(&firmware, &plan).map_err(PlanError::Measure)?;
        let save_areas =
            VcpuSaveAreas::new(&firmware, options.guest_features, vcpu_sig, VmmType::Qemu)
                .map_err(PlanError::Measure)?;
        Ok(LaunchPlan {
            firmware,
            steps,
            save_areas,
            vcpu_sig,
            options,
        })
    }

    /// The launch digest this plan produces, computed by the attestation
    /// library without launching anything.
    pub fn expected_measurement(&self) -> Result<[u8; 48], PlanError> {
        let inputs = MeasureInputs {
            firmware: &self.firmware,
            vcpus: self.options.vcpus,
            vcpu_sig: self.vcpu_sig,
            guest_features: self.options.guest_features,
            vmm_type: VmmType::Qemu,
            kernel_hashes: None,
            ovmf_hash: None,
            firmware_page_digests: None,
        };
        snp_launch_digest(&inputs).map_err(PlanError::Measure)
    }

    /// The update steps the VMM issues (VMSAs excluded: LAUNCH_FINISH adds them).
    pub fn updates(&self) -> impl Iterator<Item = &LaunchStep> {
        self.steps
            .iter()
            .filter(|s| !matches!(s.source, StepSource::Vmsa { .. }))
    }

    /// The VMSA page of every vCPU, in vCPU order.
    pub fn vmsa_pages(&self) -> Result<Vec<Vec<u8>>, PlanError> {
        (0..self.options.vcpus)
            .map(|i| {
                self.save_areas
                    .get(i)
                    .map(|a| a.as_page().to_vec())
                    .map_err(PlanError::Measure)
            })
            .collect()
    }

    /// The options the plan was made with.
    pub fn options(&self) -> &LaunchOptions {
        &self.options
    }

    /// The firmware image bytes.
    pub fn firmware_bytes(&self) -> &'a [u8] {
        self.firmware.data()
    }
}

/// Typestate: LAUNCH_START done, updates may follow.
pub struct Started;
/// Typestate: at least one LAUNCH_UPDATE done.
pub struct Updating;

/// A launch in progress on backend `B`, in state `S`.
pub struct Launch<B, S> {
    backend: B,
    state: PhantomData<S>,
}

impl<B: ConfidentialLaunch> Launch<B, Started> {
    /// SNP_LAUNCH_START.
    pub fn start(mut backend: B, params: &LaunchStartParams) -> Result<Self, LaunchError> {
        backend.launch_start(params)?;
        Ok(Launch {
            backend,
            state: PhantomData,
        })
    }
}

/// States from which LAUNCH_UPDATE and LAUNCH_FINISH are allowed.
pub trait Open {}
impl Open for Started {}
impl Open for Updating {}

impl<B: ConfidentialLaunch, S: Open> Launch<B, S> {
    /// SNP_LAUNCH_UPDATE of one range.
    pub fn update(mut self, update: &LaunchUpdate<'_>) -> Result<Launch<B, Updating>, LaunchError> {
        self.backend.launch_update(update)?;
        Ok(Launch {
            backend: self.backend,
            state: PhantomData,
        })
    }

    /// SNP_LAUNCH_FINISH: gives the backend back with the measurement.
    pub fn finish(
        mut self,
        params: &LaunchFinishParams,
    ) -> Result<(B, LaunchFinished), LaunchError> {
        let finished = self.backend.launch_finish(params)?;
        Ok((self.backend, finished))
    }
}

/// Runs a whole plan on `backend`: START, every update in plan order, FINISH.
pub fn execute<B: ConfidentialLaunch>(
    backend: B,
    plan: &LaunchPlan<'_>,
) -> Result<(B, LaunchFinished), ExecuteError> {
    let options = plan.options();
    let mut launch = Launch::start(
        backend,
        &LaunchStartParams {
            policy: options.policy,
        },
    )?
    .update_none();
    for step in plan.updates() {
        let contents = match step.source {
            StepSource::Image { offset, .. } => {
                let end = offset + step.len as usize;
                Some(
                    plan.firmware_bytes()
                        .get(offset..end)
                        .ok_or(ExecuteError::ImageRange(step.gpa))?,
                )
            }
            _ => None,
        };
        let update = LaunchUpdate {
            gpa: step.gpa,
            len: step.len,
            page_type: step.page_type,
            contents,
        };
        launch = launch.update(&update)?;
    }
    let finish = LaunchFinishParams {
        id_block: options.id_block.clone(),
        id_auth: options.id_auth.clone(),
        // AUTHOR_KEY_EN when the ID auth carries an author key: its curve
        // field (SNP ABI §8.18, ID_AUTH offset 0x880) is non-zero.
        auth_key_en: options
            .id_auth
            .as_ref()
            .and_then(|auth| auth.get(0x880..0x884))
            .is_some_and(|curve| curve != [0; 4]),
        host_data: options.host_data,
        vmsa_pages: plan.vmsa_pages()?,
    };
    Ok(launch.finish(&finish)?)
}

impl<B> Launch<B, Started> {
    /// Views a started launch as updating (a launch may have no updates).
    fn update_none(self) -> Launch<B, Updating> {
        Launch {
            backend: self.backend,
            state: PhantomData,
        }
    }
}

/// Errors while executing a plan.
#[derive(Debug, Error)]
pub enum ExecuteError {
    /// A launch command failed.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// The plan could not produce its VMSAs.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A step points outside the firmware image (a bug in the plan).
    #[error("launch step at {0:#x} lies outside the firmware image")]
    ImageRange(u64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::confidential::PageType;
    use crate::firmware::EMBEDDED_FIRMWARE;

    fn options(vcpus: u32) -> LaunchOptions {
        LaunchOptions {
            vcpus,
            vcpu_type: "EPYC-v4".into(),
            guest_features: 1,
            policy: DEFAULT_POLICY,
            host_data: [0; 32],
            id_block: None,
            id_auth: None,
        }
    }

    /// A backend that records what the engine asks for and digests like the
    /// firmware, through the attestation library's GCTX.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<String>,
        ld: Option<umbra_attestation::measure::gctx::LaunchDigest>,
    }

    impl ConfidentialLaunch for Recorder {
        fn launch_start(&mut self, params: &LaunchStartParams) -> Result<(), LaunchError> {
            self.calls.push(format!("start {:#x}", params.policy));
            self.ld = Some(Default::default());
            Ok(())
        }
        fn launch_update(&mut self, u: &LaunchUpdate<'_>) -> Result<(), LaunchError> {
            self.calls.push(format!(
                "update {:?} {:#x} {:#x}",
                u.page_type, u.gpa, u.len
            ));
            let ld = self.ld.as_mut().unwrap();
            match u.contents {
                Some(data) => ld.update_normal_pages(u.gpa, data),
                None => ld.update_range(u.page_type, u.gpa, u.len),
            }
            Ok(())
        }
        fn launch_finish(&mut self, p: &LaunchFinishParams) -> Result<LaunchFinished, LaunchError> {
            self.calls.push(format!("finish {}", p.vmsa_pages.len()));
            let ld = self.ld.as_mut().unwrap();
            for page in &p.vmsa_pages {
                let page: &[u8; 4096] = page.as_slice().try_into().unwrap();
                ld.update(
                    PageType::Vmsa,
                    umbra_attestation::measure::gctx::VMSA_GPA,
                    Some(page),
                );
            }
            Ok(LaunchFinished {
                measurement: ld.digest(),
            })
        }
    }

    #[test]
    fn engine_reproduces_the_predicted_digest() {
        for vcpus in [1, 4] {
            let plan = LaunchPlan::new(EMBEDDED_FIRMWARE, options(vcpus)).unwrap();
            let (rec, finished) = execute(Recorder::default(), &plan).unwrap();
            assert_eq!(finished.measurement, plan.expected_measurement().unwrap());
            assert_eq!(rec.calls.first().unwrap(), "start 0x30000");
            // Firmware first (every ROM page), then the five SEV metadata sections.
            use umbra_firmware::layout::{ROM_BASE, ROM_SIZE};
            assert_eq!(
                rec.calls[1],
                format!("update Normal {ROM_BASE:#x} {ROM_SIZE:#x}")
            );
            assert_eq!(rec.calls[3], "update Secrets 0x18000 0x1000");
            assert_eq!(rec.calls[4], "update Cpuid 0x19000 0x1000");
            assert_eq!(rec.calls.last().unwrap(), &format!("finish {vcpus}"));
        }
    }

    #[test]
    fn refuses_bad_plans() {
        let mut o = options(1);
        o.policy = 0;
        assert!(matches!(
            LaunchPlan::new(EMBEDDED_FIRMWARE, o),
            Err(PlanError::Policy(0))
        ));
        let mut o = options(1);
        o.vcpu_type = "Pentium".into();
        assert!(matches!(
            LaunchPlan::new(EMBEDDED_FIRMWARE, o),
            Err(PlanError::VcpuType(_))
        ));
        assert!(matches!(
            LaunchPlan::new(&[0u8; 8192], options(1)),
            Err(PlanError::NoFooterTable)
        ));
    }
}
