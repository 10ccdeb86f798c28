//! The firmware image embedded in the `umbra` binary (built by build.rs
//! from the `umbra-firmware` crate).

/// The ROM image (`layout::ROM_SIZE`) of umbra's own firmware.
pub static EMBEDDED_FIRMWARE: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/umbra-firmware.bin"));

#[cfg(test)]
mod tests {
    use super::*;
    use umbra_firmware::footer::FOOTER_GUID;
    use umbra_firmware::layout::ROM_SIZE;

    #[test]
    fn image_has_reset_vector_and_footer() {
        assert_eq!(EMBEDDED_FIRMWARE.len() as u64, ROM_SIZE);
        let end = EMBEDDED_FIRMWARE.len();
        // A near jmp (E9 rel16) at the reset vector, 16 bytes before the end.
        assert_eq!(EMBEDDED_FIRMWARE[end - 16], 0xE9);
        let rel = i16::from_le_bytes([EMBEDDED_FIRMWARE[end - 15], EMBEDDED_FIRMWARE[end - 14]]);
        let target = (0xFFF3u16).wrapping_add(rel as u16);
        assert_eq!(target, 0xF000, "reset vector jumps to the 16-bit entry");
        // The OVMF footer GUID ends 0x20 bytes before the end of the image.
        assert_eq!(
            &EMBEDDED_FIRMWARE[end - 0x20 - 16..end - 0x20],
            &FOOTER_GUID
        );
    }
}
