#![allow(clippy::unwrap_used)]
//! Launching the embedded firmware through the SNP firmware model, the way
//! the VMM does (the steps of `snp_launch_steps` in order, VMSAs at
//! LAUNCH_FINISH), yields exactly the digest `umbra-attest measure` (and
//! sev-snp-measure, see attestation/tests) predicts for the same inputs.

use umbra_attestation::id_block::{IdAuth, IdBlock, SigningKey};
use umbra_attestation::measure::ovmf::FirmwareImage;
use umbra_attestation::measure::{
    snp_launch_digest, snp_launch_steps, MeasureInputs, PlanOptions, StepSource, VcpuSaveAreas,
    VmmType,
};
use umbra_snp_model::psp::{GuestState, Platform, SnpFirmwareModel};
use umbra_vmm::backend::confidential::{
    ConfidentialLaunch, FirmwareStatus, LaunchError, LaunchFinishParams, LaunchStartParams,
    LaunchUpdate, PageType,
};
use umbra_vmm::backend::snp_model::ModelLaunch;
use umbra_vmm::firmware::EMBEDDED_FIRMWARE;
use vm_memory::{GuestAddress, GuestMemoryMmap};
use zerocopy::IntoBytes;

const SEV_FEATURES: u64 = 1; // SNPActive
const VCPU_SIG: u32 = 0x00A0_0F11; // Milan family 0x19 model 1 stepping 1
const LOW_RAM: u64 = 64 << 20;

struct Guest {
    memory: GuestMemoryMmap,
    model: SnpFirmwareModel,
}

fn guest(fw: &FirmwareImage<'_>) -> Guest {
    let ranges = [(0, LOW_RAM), (fw.gpa(), fw.size() as u64)];
    let memory = GuestMemoryMmap::<()>::from_ranges(
        &ranges
            .iter()
            .map(|&(g, s)| (GuestAddress(g), s as usize))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    // The VMM proposes a CPUID page (the firmware refuses an empty one): one
    // entry at every CPUID section the image declares.
    let mut cpuid = [0u8; 4096];
    cpuid[0..4].copy_from_slice(&1u32.to_le_bytes());
    for s in fw.sections() {
        if s.section_type == umbra_attestation::measure::ovmf::SectionType::Cpuid {
            vm_memory::Bytes::write_slice(&memory, &cpuid, GuestAddress(u64::from(s.gpa))).unwrap();
        }
    }
    let model = SnpFirmwareModel::new(&ranges, None, Platform::default()).unwrap();
    Guest { memory, model }
}

/// Drives the plan through `ConfidentialLaunch` and returns the measurement.
fn launch(
    fw: &FirmwareImage<'_>,
    g: &mut Guest,
    vcpus: u32,
    id: Option<(Vec<u8>, Vec<u8>)>,
) -> Result<[u8; 48], LaunchError> {
    let steps = snp_launch_steps(
        fw,
        &PlanOptions {
            vmm_type: VmmType::Qemu,
            kernel_hashes: false,
            include_firmware: true,
            vcpus,
        },
    )
    .unwrap();
    let areas = VcpuSaveAreas::new(fw, SEV_FEATURES, VCPU_SIG, VmmType::Qemu).unwrap();
    let mut l = ModelLaunch::new(&mut g.model, &g.memory);
    l.launch_start(&LaunchStartParams { policy: 0x30000 })?;
    let mut vmsa_pages = Vec::new();
    for step in &steps {
        match step.source {
            StepSource::Vmsa { vcpu } => {
                vmsa_pages.push(areas.get(vcpu).unwrap().as_page().to_vec());
            }
            _ => l.launch_update(&LaunchUpdate {
                gpa: step.gpa,
                len: step.len,
                page_type: step.page_type,
                contents: step.image_bytes(fw),
            })?,
        }
    }
    let (id_block, id_auth) = id.map_or((None, None), |(b, a)| (Some(b), Some(a)));
    let finished = l.launch_finish(&LaunchFinishParams {
        id_block,
        id_auth,
        auth_key_en: false,
        host_data: [0x42; 32],
        vmsa_pages,
    })?;
    Ok(finished.measurement)
}

fn expected(fw: &FirmwareImage<'_>, vcpus: u32) -> [u8; 48] {
    snp_launch_digest(&MeasureInputs {
        firmware: fw,
        vcpus,
        vcpu_sig: VCPU_SIG,
        guest_features: SEV_FEATURES,
        vmm_type: VmmType::Qemu,
        kernel_hashes: None,
        ovmf_hash: None,
        firmware_page_digests: None,
    })
    .unwrap()
}

#[test]
fn embedded_firmware_digest_matches_the_prediction_for_1_and_4_vcpus() {
    let fw = FirmwareImage::parse(EMBEDDED_FIRMWARE).unwrap();
    // The plan exercises the page types the model writes or checks.
    let plan = snp_launch_steps(
        &fw,
        &PlanOptions {
            vmm_type: VmmType::Qemu,
            kernel_hashes: false,
            include_firmware: true,
            vcpus: 1,
        },
    )
    .unwrap();
    for t in [
        PageType::Normal,
        PageType::Secrets,
        PageType::Cpuid,
        PageType::Vmsa,
    ] {
        assert!(
            plan.iter().any(|s| s.page_type == t),
            "plan has a {t:?} step"
        );
    }
    let mut seen = Vec::new();
    for vcpus in [1, 4] {
        let mut g = guest(&fw);
        let got = launch(&fw, &mut g, vcpus, None).unwrap();
        assert_eq!(got, expected(&fw, vcpus), "{vcpus} vCPU(s)");
        assert_eq!(g.model.state(), GuestState::Running);
        // The firmware pages are in guest memory as measured.
        let mut buf = vec![0u8; fw.size()];
        vm_memory::Bytes::read_slice(&g.memory, &mut buf, GuestAddress(fw.gpa())).unwrap();
        assert_eq!(buf, EMBEDDED_FIRMWARE);
        seen.push(got);
    }
    assert_ne!(seen[0], seen[1], "the VMSA count enters the digest");
}

#[test]
fn id_block_for_the_predicted_digest_is_accepted_and_a_wrong_one_refused() {
    let fw = FirmwareImage::parse(EMBEDDED_FIRMWARE).unwrap();
    let ec = openssl::ec::EcKey::generate(
        &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::SECP384R1).unwrap(),
    )
    .unwrap();
    let key = SigningKey::from_pem(&ec.private_key_to_pem().unwrap()).unwrap();
    let id = |ld: [u8; 48]| {
        let block = IdBlock::new(ld, [1; 16], [2; 16], 7, 0x30000);
        let auth = IdAuth::sign(&block, &key, None).unwrap();
        (block.as_bytes().to_vec(), auth.as_bytes().to_vec())
    };

    let mut g = guest(&fw);
    let ld = expected(&fw, 2);
    assert_eq!(launch(&fw, &mut g, 2, Some(id(ld))).unwrap(), ld);
    assert_eq!(g.model.identity().guest_svn, 7);
    assert_eq!(g.model.identity().family_id, [1; 16]);

    let mut wrong = ld;
    wrong[0] ^= 1;
    let mut g = guest(&fw);
    match launch(&fw, &mut g, 2, Some(id(wrong))) {
        Err(LaunchError::Finish(FirmwareStatus::BadMeasurement)) => {}
        other => panic!("expected BAD_MEASUREMENT, got {other:?}"),
    }
    assert_eq!(g.model.state(), GuestState::Launch);
}
