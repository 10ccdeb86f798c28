//! Tests of the guest context and launch state machine.
use super::*;
use umbra_attestation::id_block::SigningKey;
use umbra_attestation::measure::gctx::LaunchDigest;

const RAM: u64 = 4 << 20;

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap()
}

fn model() -> SnpFirmwareModel {
    SnpFirmwareModel::new(&[(0, RAM)], None, Platform::default()).unwrap()
}

fn started() -> SnpFirmwareModel {
    let mut m = model();
    m.launch_start(0x30000, [0; 16]).unwrap();
    m
}

fn finish(m: &mut SnpFirmwareModel) -> Result<[u8; 48], FirmwareStatus> {
    m.launch_finish(&finish_params(None, None, false))
}

fn finish_params(
    block: Option<Vec<u8>>,
    auth: Option<Vec<u8>>,
    auth_key_en: bool,
) -> LaunchFinishParams {
    LaunchFinishParams {
        id_block: block,
        id_auth: auth,
        auth_key_en,
        host_data: [0; 32],
        vmsa_pages: vec![vec![0x11; PAGE_SIZE]],
    }
}

fn p384() -> SigningKey {
    let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::SECP384R1).unwrap();
    let ec = openssl::ec::EcKey::generate(&group).unwrap();
    SigningKey::from_pem(&ec.private_key_to_pem().unwrap()).unwrap()
}

#[test]
fn status_values_are_those_of_psp_sev_h() {
    // Linux include/uapi/linux/psp-sev.h, enum sev_ret_code.
    for (s, v) in [
        (FirmwareStatus::InvalidGuestState, 0x02),
        (FirmwareStatus::InvalidLength, 0x04),
        (FirmwareStatus::PolicyFailure, 0x07),
        (FirmwareStatus::InvalidAddress, 0x09),
        (FirmwareStatus::BadSignature, 0x0A),
        (FirmwareStatus::BadMeasurement, 0x0B),
        (FirmwareStatus::InvalidParam, 0x16),
        (FirmwareStatus::InvalidPageState, 0x1A),
        (FirmwareStatus::AeadOflow, 0x1D),
        (FirmwareStatus::InvalidKey, 0x27),
    ] {
        assert_eq!(s as u32, v, "{s}");
        assert_eq!(FirmwareStatus::from_code(v), Some(s));
    }
}

#[test]
fn launch_start_policy_checks() {
    let mut m = model();
    // Bit 17 clear; a reserved bit (26) set.
    assert_eq!(
        m.launch_start(0x10000, [0; 16]),
        Err(FirmwareStatus::InvalidParam)
    );
    assert_eq!(
        m.launch_start(0x30000 | 1 << 26, [0; 16]),
        Err(FirmwareStatus::InvalidParam)
    );
    // ABI 2.0 is newer than the firmware's 1.55; 1.56 too.
    assert_eq!(
        m.launch_start(0x30200, [0; 16]),
        Err(FirmwareStatus::PolicyFailure)
    );
    assert_eq!(
        m.launch_start(0x30138, [0; 16]),
        Err(FirmwareStatus::PolicyFailure)
    );
    // SMT disallowed on an SMT platform; ciphertext hiding on Milan.
    assert_eq!(
        m.launch_start(0x20000, [0; 16]),
        Err(FirmwareStatus::PolicyFailure)
    );
    assert_eq!(
        m.launch_start(0x30000 | 1 << 24, [0; 16]),
        Err(FirmwareStatus::PolicyFailure)
    );
    assert_eq!(m.state(), GuestState::Init);
    m.launch_start(0x30137, [0; 16]).unwrap();
    // MIGRATE_MA allows a migration agent; it asks for nothing the
    // platform lacks, so the firmware accepts it.
    model()
        .launch_start(0x30000 | policy::MIGRATE_MA, [0; 16])
        .unwrap();
    assert_eq!(
        m.launch_start(0x30000, [0; 16]),
        Err(FirmwareStatus::InvalidGuestState)
    );
}

#[test]
fn update_refusals() {
    let mem = memory();
    let mut m = model();
    let page = [0u8; PAGE_SIZE];
    assert_eq!(
        m.launch_update(0, 4096, PageType::Normal, Some(&page), &mem),
        Err(FirmwareStatus::InvalidGuestState)
    );
    m.launch_start(0x30000, [0; 16]).unwrap();
    let up = |m: &mut SnpFirmwareModel, gpa, len, t| m.launch_update(gpa, len, t, None, &mem);
    assert_eq!(
        up(&mut m, 0x1800, 4096, PageType::Zero),
        Err(FirmwareStatus::InvalidAddress)
    );
    assert_eq!(
        up(&mut m, 0x1000, 0x800, PageType::Zero),
        Err(FirmwareStatus::InvalidLength)
    );
    assert_eq!(
        up(&mut m, RAM, 4096, PageType::Zero),
        Err(FirmwareStatus::InvalidAddress)
    );
    assert_eq!(
        up(&mut m, 0xD000_0000, 4096, PageType::Zero),
        Err(FirmwareStatus::InvalidAddress)
    );
    assert_eq!(
        up(&mut m, RAM - 4096, 8192, PageType::Zero),
        Err(FirmwareStatus::InvalidAddress)
    );
    assert_eq!(
        up(&mut m, 0, 4096, PageType::Vmsa),
        Err(FirmwareStatus::InvalidParam)
    );
    // Overlapping updates: the second range shares a page with the first.
    up(&mut m, 0x10000, 0x3000, PageType::Zero).unwrap();
    let before = m.launch_digest();
    assert_eq!(
        up(&mut m, 0x12000, 0x2000, PageType::Unmeasured),
        Err(FirmwareStatus::InvalidPageState)
    );
    assert_eq!(
        m.launch_digest(),
        before,
        "a refused update measures nothing"
    );
    assert!(!m.rmp().entry(0x13000).unwrap().assigned);
    let e = m.rmp().entry(0x12000).unwrap();
    assert!(e.assigned && e.validated && e.immutable);
    // After FINISH: INVALID_GUEST_STATE, and launch pages are mutable.
    finish(&mut m).unwrap();
    assert_eq!(
        up(&mut m, 0x20000, 4096, PageType::Zero),
        Err(FirmwareStatus::InvalidGuestState)
    );
    assert!(!m.rmp().entry(0x12000).unwrap().immutable);
    assert_eq!(finish(&mut m), Err(FirmwareStatus::InvalidGuestState));
}

#[test]
fn digest_follows_the_attestation_crate_page_by_page() {
    let mem = memory();
    let mut m = started();
    let data: Vec<u8> = (0..3 * PAGE_SIZE).map(|i| (i * 7) as u8).collect();
    m.launch_update(
        0x100000,
        data.len() as u64,
        PageType::Normal,
        Some(&data),
        &mem,
    )
    .unwrap();
    m.launch_update(0x200000, 0x2000, PageType::Zero, None, &mem)
        .unwrap();
    let mut ld = LaunchDigest::new();
    ld.update_normal_pages(0x100000, &data);
    ld.update_range(PageType::Zero, 0x200000, 0x2000);
    assert_eq!(m.launch_digest(), ld.digest());
    let got = finish(&mut m).unwrap();
    ld.update(PageType::Vmsa, VMSA_GPA, Some(&[0x11; PAGE_SIZE]));
    assert_eq!(got, ld.digest());
    // The NORMAL contents were copied into guest memory, as KVM does.
    let mut back = vec![0u8; data.len()];
    mem.read_slice(&mut back, GuestAddress(0x100000)).unwrap();
    assert_eq!(back, data);
}

#[test]
fn secrets_page_is_written() {
    let mem = memory();
    mem.write_slice(&[0xEE; PAGE_SIZE], GuestAddress(0x3000))
        .unwrap();
    let mut m = started();
    m.launch_update(0x3000, 4096, PageType::Secrets, None, &mem)
        .unwrap();
    let mut p = [0u8; PAGE_SIZE];
    mem.read_slice(&mut p, GuestAddress(0x3000)).unwrap();
    assert_eq!(&p[0..4], &crate::secrets::SECRETS_VERSION.to_le_bytes());
    assert_eq!(&p[8..12], &MODEL_FMS.to_le_bytes());
    for k in 0..4 {
        let key = &p[0x20 + 32 * k..0x40 + 32 * k];
        assert!(key.iter().any(|&b| b != 0), "VMPCK{k} is not zero");
        assert_eq!(key, &m.vmpck[k]);
    }
    assert!(p[0xA0..].iter().all(|&b| b == 0));
    assert_ne!(&p[0x20..0x40], &p[0x40..0x60]);
}

#[test]
fn cpuid_page_with_refused_bits_is_corrected_and_refused_once() {
    let mem = memory();
    let mut m = started();
    let mut page = [0u8; PAGE_SIZE];
    page[0..4].copy_from_slice(&2u32.to_le_bytes());
    // Entry 0: leaf 7 subleaf 0 with EDX SPEC_CTRL (bit 26) set.
    let e0 = 0x10;
    page[e0..e0 + 4].copy_from_slice(&7u32.to_le_bytes());
    page[e0 + 0x24..e0 + 0x28].copy_from_slice(&(1u32 << 26 | 1).to_le_bytes());
    // Entry 1: leaf 1 with the wrong family/model/stepping.
    let e1 = 0x40;
    page[e1..e1 + 4].copy_from_slice(&1u32.to_le_bytes());
    page[e1 + 0x18..e1 + 0x1C].copy_from_slice(&0x000906EAu32.to_le_bytes());
    let before = m.launch_digest();
    assert_eq!(
        m.launch_update(0x5000, 4096, PageType::Cpuid, Some(&page), &mem),
        Err(FirmwareStatus::InvalidParam)
    );
    assert_eq!(m.launch_digest(), before);
    let fixes = m.cpuid_corrections().to_vec();
    assert_eq!(fixes.len(), 2, "{fixes:?}");
    assert_eq!((fixes[0].leaf, fixes[0].field), (7, "EDX"));
    assert_eq!((fixes[0].proposed, fixes[0].accepted), (1 << 26 | 1, 1));
    assert_eq!(
        (fixes[1].leaf, fixes[1].field, fixes[1].accepted),
        (1, "EAX", 0x00A0_0F11)
    );
    // The corrected table is in guest memory; resubmitting it succeeds.
    let mut fixed = [0u8; PAGE_SIZE];
    mem.read_slice(&mut fixed, GuestAddress(0x5000)).unwrap();
    assert_eq!(&fixed[e0 + 0x24..e0 + 0x28], &1u32.to_le_bytes());
    m.launch_update(0x5000, 4096, PageType::Cpuid, None, &mem)
        .unwrap();
    assert!(m.cpuid_corrections().is_empty());
    // More than 64 entries is refused too.
    let mut page = [0u8; PAGE_SIZE];
    page[0..4].copy_from_slice(&65u32.to_le_bytes());
    assert_eq!(
        m.launch_update(0x6000, 4096, PageType::Cpuid, Some(&page), &mem),
        Err(FirmwareStatus::InvalidParam)
    );
}

#[test]
fn id_block_checks() {
    let key = p384();
    let author = p384();
    let mut m = started();
    let ld = {
        let mut d = m.digest.clone();
        d.update(PageType::Vmsa, VMSA_GPA, Some(&[0x11; PAGE_SIZE]));
        d.digest()
    };
    let signed = |ld, policy, author: Option<&SigningKey>| {
        let block = IdBlock::new(ld, [3; 16], [4; 16], 9, policy);
        let auth = IdAuth::sign(&block, &key, author).unwrap();
        (block.as_bytes().to_vec(), auth.as_bytes().to_vec())
    };
    let try_finish = |m: &mut SnpFirmwareModel, (b, a): (Vec<u8>, Vec<u8>), en| {
        m.launch_finish(&finish_params(Some(b), Some(a), en))
    };
    let mut wrong = ld;
    wrong[47] ^= 0x80;
    assert_eq!(
        try_finish(&mut m, signed(wrong, 0x30000, None), false),
        Err(FirmwareStatus::BadMeasurement)
    );
    assert_eq!(
        try_finish(&mut m, signed(ld, 0x30001, None), false),
        Err(FirmwareStatus::PolicyFailure)
    );
    // A block altered after signing.
    let (mut b, a) = signed(ld, 0x30000, None);
    b[0x54] ^= 1;
    assert_eq!(
        try_finish(&mut m, (b, a), false),
        Err(FirmwareStatus::BadSignature)
    );
    // auth_key_en without an author signature.
    assert_eq!(
        try_finish(&mut m, signed(ld, 0x30000, None), true),
        Err(FirmwareStatus::BadSignature)
    );
    assert_eq!(
        m.launch_finish(&finish_params(None, None, true)),
        Err(FirmwareStatus::InvalidParam)
    );
    assert_eq!(m.state(), GuestState::Launch);
    try_finish(&mut m, signed(ld, 0x30000, Some(&author)), true).unwrap();
    let id = m.identity();
    assert_eq!(
        (id.guest_svn, id.family_id, id.image_id),
        (9, [3; 16], [4; 16])
    );
    assert_eq!(id.author_key_digest, author.public_key().unwrap().digest());
    assert_eq!(id.id_key_digest, key.public_key().unwrap().digest());
    assert!(id.author_key_en);
}
