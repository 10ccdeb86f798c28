//! The firmware's command line: whitespace-separated `key=value` words.
//!
//! `scenario=NAME` picks what the firmware runs; scenarios read their own
//! keys (`memtest=START-END`, `stride=N`). Numbers are decimal or `0x` hex
//! with an optional K/M/G suffix.

/// A parsed command line (borrowed; no allocation, usable in the guest).
#[derive(Clone, Copy, Debug)]
pub struct Cmdline<'a> {
    text: &'a str,
}

/// The scenarios the firmware knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Print the banner and exit 0.
    Hello,
    /// Write to the ROM and check the bytes did not change.
    RomWrite,
    /// Write to the ROM `count=N` times (default a million): the VMM must
    /// refuse every write, stay fast and keep its log bounded.
    Flood,
    /// Touch the guard range and check no memory answered.
    Guard,
    /// Every vCPU checks in.
    Smp,
    /// Write and verify a pattern over a RAM range.
    Memtest,
    /// SNP: request an attestation report with `report_data=HEX`.
    Attest,
    /// SNP: convert a page private <-> shared and check what the VMM sees.
    Psc,
    /// SNP: ask the VMM to read a private page; expect refusal.
    PrivateRead,
    /// Take the UART's transmit interrupt through the IOAPIC and the local
    /// APIC in x2APIC mode.
    SerialIrq,
    /// Read one line from the UART (console input) and echo it back.
    SerialEcho,
    /// SNP: remove the #VC handler and write a port directly, as a guest
    /// without one would (the platform must stop the guest).
    NoVc,
    /// virtio-blk: write sectors, read them back, flush (`disk_check=HEX`:
    /// sector 0 must start with these bytes, which the host wrote).
    VirtioBlk,
    /// virtio-rng: two requests give bytes, and different ones.
    VirtioRng,
    /// virtio-vsock: echo through host port 1234, then serve a host
    /// connection to port 5000.
    VsockEcho,
    /// virtio-iommu: block I/O through IOVAs of an attached domain.
    IommuBlk,
    /// virtio-iommu: a buffer at an unmapped IOVA fails, with a fault event.
    IommuUnmapped,
    /// virtio-iommu: a device write through a read-only mapping is refused.
    IommuRo,
    /// virtio-iommu: UNMAP while I/O is in flight; no access after it.
    IommuUnmapRace,
    /// virtio-iommu: an endpoint not attached reaches nothing.
    IommuDetached,
    /// virtio-balloon: touch 256 MiB, inflate to the target, report it.
    Balloon,
    /// A virtio-blk write whose data is a private page (SNP): refused.
    DmaPrivate,
    /// A virtio-blk read into the ROM: refused.
    DmaRom,
    /// A virtio-blk read into memory beyond RAM: refused.
    DmaBeyond,
    /// A virtio-blk read into an unmapped hole: refused.
    DmaUnmapped,
    /// Trustee KBS exchange over vsock: attest, fetch a resource, print
    /// its SHA-256.
    Kbs,
    /// A guest request whose shared request page is mapped with the C-bit.
    NoCbit,
}

impl Scenario {
    /// All scenarios with their command-line names.
    pub const ALL: [(&'static str, Scenario); 27] = [
        ("hello", Scenario::Hello),
        ("rom-write", Scenario::RomWrite),
        ("flood", Scenario::Flood),
        ("guard", Scenario::Guard),
        ("smp", Scenario::Smp),
        ("memtest", Scenario::Memtest),
        ("attest", Scenario::Attest),
        ("psc", Scenario::Psc),
        ("private-read", Scenario::PrivateRead),
        ("serial-irq", Scenario::SerialIrq),
        ("serial-echo", Scenario::SerialEcho),
        ("no-vc", Scenario::NoVc),
        ("virtio-blk", Scenario::VirtioBlk),
        ("virtio-rng", Scenario::VirtioRng),
        ("vsock-echo", Scenario::VsockEcho),
        ("balloon", Scenario::Balloon),
        ("iommu-blk", Scenario::IommuBlk),
        ("iommu-unmapped", Scenario::IommuUnmapped),
        ("iommu-ro", Scenario::IommuRo),
        ("iommu-unmap-race", Scenario::IommuUnmapRace),
        ("iommu-detached", Scenario::IommuDetached),
        ("dma-private", Scenario::DmaPrivate),
        ("dma-rom", Scenario::DmaRom),
        ("dma-beyond", Scenario::DmaBeyond),
        ("dma-unmapped", Scenario::DmaUnmapped),
        ("kbs", Scenario::Kbs),
        ("no-cbit", Scenario::NoCbit),
    ];
}

impl<'a> Cmdline<'a> {
    /// Wraps a command line.
    pub fn new(text: &'a str) -> Self {
        Cmdline { text }
    }

    /// The value of the last `key=value` word with this key.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.text
            .split_ascii_whitespace()
            .rev()
            .filter_map(|word| word.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    /// The selected scenario: `Ok(Hello)` when none is named, `Err(name)`
    /// for an unknown one.
    pub fn scenario(&self) -> Result<Scenario, &'a str> {
        match self.get("scenario") {
            None => Ok(Scenario::Hello),
            Some(name) => Scenario::ALL
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, s)| *s)
                .ok_or(name),
        }
    }

    /// A numeric value (see [`parse_number`]).
    pub fn number(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(parse_number)
    }

    /// A `START-END` range of numbers.
    pub fn range(&self, key: &str) -> Option<(u64, u64)> {
        let (start, end) = self.get(key)?.split_once('-')?;
        let (start, end) = (parse_number(start)?, parse_number(end)?);
        (start < end).then_some((start, end))
    }
}

/// Parses `123`, `0x1000`, `16M`, `0x10K`, `1G`.
pub fn parse_number(text: &str) -> Option<u64> {
    let (digits, shift) = match text.as_bytes().last()? {
        b'K' | b'k' => (&text[..text.len() - 1], 10),
        b'M' | b'm' => (&text[..text.len() - 1], 20),
        b'G' | b'g' => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    let value = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None => digits.parse::<u64>().ok()?,
    };
    value.checked_mul(1u64 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_scenarios() {
        assert_eq!(Cmdline::new("").scenario(), Ok(Scenario::Hello));
        assert_eq!(
            Cmdline::new("  scenario=smp ").scenario(),
            Ok(Scenario::Smp)
        );
        assert_eq!(
            Cmdline::new("scenario=rom-write x=1").scenario(),
            Ok(Scenario::RomWrite)
        );
        assert_eq!(
            Cmdline::new("scenario=serial-irq").scenario(),
            Ok(Scenario::SerialIrq)
        );
        assert_eq!(
            Cmdline::new("scenario=serial-echo").scenario(),
            Ok(Scenario::SerialEcho)
        );
        assert_eq!(
            Cmdline::new("scenario=no-vc").scenario(),
            Ok(Scenario::NoVc)
        );
        assert_eq!(
            Cmdline::new("scenario=dma-unmapped").scenario(),
            Ok(Scenario::DmaUnmapped)
        );
        assert_eq!(Cmdline::new("scenario=nope").scenario(), Err("nope"));
    }

    #[test]
    fn parses_numbers_and_ranges() {
        assert_eq!(parse_number("4096"), Some(4096));
        assert_eq!(parse_number("0x1000"), Some(4096));
        assert_eq!(parse_number("16M"), Some(16 << 20));
        assert_eq!(parse_number("1G"), Some(1 << 30));
        assert_eq!(parse_number("0x10K"), Some(16 << 10));
        assert_eq!(parse_number(""), None);
        assert_eq!(parse_number("zz"), None);
        assert_eq!(parse_number("99999999999999G"), None);
        let c = Cmdline::new("scenario=memtest memtest=2M-1G stride=64");
        assert_eq!(c.range("memtest"), Some((2 << 20, 1 << 30)));
        assert_eq!(c.number("stride"), Some(64));
        assert_eq!(Cmdline::new("memtest=1G-2M").range("memtest"), None);
    }
}
