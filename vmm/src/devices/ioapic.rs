//! A userspace IOAPIC (82093AA-style) for KVM's split irqchip: the local
//! APICs stay in the kernel, the IOAPIC lives here, and each redirection
//! entry becomes an MSI route the VMM installs in KVM (`KVM_SET_GSI_ROUTING`),
//! so a device's irqfd on pin `n` is delivered as the MSI the guest
//! programmed for that pin.
//!
//! Registers: IOREGSEL at offset 0x00 and IOWIN at 0x10, 32-bit accesses
//! only; behind them the ID (index 0), version (1), arbitration (2) and
//! redirection-table (0x10..=0x3F, two dwords per pin) registers. Every
//! access is hostile guest input: accesses of another size or at another
//! offset read as all-ones and are ignored when written, and no access
//! panics.
//!
//! Only edge-triggered delivery is modelled. A level-triggered entry is
//! routed as edge (its MSI has the trigger bit clear): a level interrupt
//! needs remote IRR and re-delivery while the line stays asserted after the
//! local APIC's EOI, and with the split irqchip that EOI arrives as a
//! `KVM_EXIT_IOAPIC_EOI` the VMM does not handle yet. Routing it as edge
//! keeps KVM from sending those exits and at least delivers each assertion.

/// Guest-physical base of the IOAPIC's MMIO window.
pub const IOAPIC_BASE: u64 = 0xFEC0_0000;
/// Size of the MMIO window.
pub const IOAPIC_SIZE: u64 = 0x1000;
/// Number of interrupt pins (redirection entries).
pub const IOAPIC_PINS: usize = 24;

/// Offset of the register-select register.
const IOREGSEL: u64 = 0x00;
/// Offset of the data window.
const IOWIN: u64 = 0x10;

const REG_ID: u32 = 0x00;
const REG_VERSION: u32 = 0x01;
const REG_ARBITRATION: u32 = 0x02;
const REG_REDTBL: u32 = 0x10;
const REG_REDTBL_END: u32 = REG_REDTBL + 2 * IOAPIC_PINS as u32;

/// Version register: version 0x11, maximum redirection entry in 23:16.
pub const IOAPIC_VERSION: u32 = 0x11 | ((IOAPIC_PINS as u32 - 1) << 16);
/// The APIC ID field of the ID register (bits 27:24).
const ID_MASK: u32 = 0x0F00_0000;

/// Redirection entry fields (82093AA datasheet §3.2.4).
const RTE_VECTOR: u64 = 0xFF;
const RTE_DELIVERY_MODE_SHIFT: u32 = 8;
const RTE_DEST_MODE: u64 = 1 << 11;
const RTE_POLARITY: u64 = 1 << 13;
const RTE_TRIGGER_LEVEL: u64 = 1 << 15;
const RTE_MASKED: u64 = 1 << 16;
const RTE_DEST_SHIFT: u32 = 56;
/// Bits the guest can write: vector, delivery mode, destination mode,
/// polarity, trigger mode, mask (low dword) and the destination (high).
/// Delivery status (12) and remote IRR (14) are read-only and stay zero:
/// edge delivery through MSI routes never leaves an interrupt pending here.
const RTE_WRITABLE: u64 = RTE_VECTOR
    | (0x7 << RTE_DELIVERY_MODE_SHIFT)
    | RTE_DEST_MODE
    | RTE_POLARITY
    | RTE_TRIGGER_LEVEL
    | RTE_MASKED
    | (0xFF << RTE_DEST_SHIFT);
/// Reset value of every entry: masked, everything else zero.
const RTE_RESET: u64 = RTE_MASKED;

/// The MSI address for the local APICs.
const MSI_ADDRESS_BASE: u32 = 0xFEE0_0000;
const MSI_ADDRESS_DEST_SHIFT: u32 = 12;
const MSI_ADDRESS_DEST_MODE_SHIFT: u32 = 2;
const MSI_DATA_DELIVERY_MODE_SHIFT: u32 = 8;
const MSI_DATA_TRIGGER_SHIFT: u32 = 15;

pub use crate::backend::MsiMessage;

impl MsiMessage {
    /// The MSI a redirection entry stands for, as KVM and QEMU translate an
    /// IOAPIC entry: address `0xFEE0_0000 | dest << 12 | dest_mode << 2`,
    /// data `vector | delivery_mode << 8 | trigger_mode << 15`. The mask
    /// bit is not looked at.
    pub fn from_rte(rte: u64) -> Self {
        let dest = (rte >> RTE_DEST_SHIFT) as u32 & 0xFF;
        let dest_mode = u32::from(rte & RTE_DEST_MODE != 0);
        let vector = (rte & RTE_VECTOR) as u32;
        let delivery_mode = (rte >> RTE_DELIVERY_MODE_SHIFT) as u32 & 0x7;
        let trigger = u32::from(rte & RTE_TRIGGER_LEVEL != 0);
        MsiMessage {
            address_lo: MSI_ADDRESS_BASE
                | (dest << MSI_ADDRESS_DEST_SHIFT)
                | (dest_mode << MSI_ADDRESS_DEST_MODE_SHIFT),
            address_hi: 0,
            data: vector
                | (delivery_mode << MSI_DATA_DELIVERY_MODE_SHIFT)
                | (trigger << MSI_DATA_TRIGGER_SHIFT),
        }
    }
}

/// Receives the IOAPIC's routes: the VMM turns them into KVM GSI routes.
pub trait MsiRouter: Send {
    /// Pin `pin`'s entry changed: route it to `msi`, or nothing (`None`,
    /// the entry is masked).
    fn set_route(&mut self, pin: usize, msi: Option<MsiMessage>);
}

/// The IOAPIC.
pub struct Ioapic {
    id: u32,
    ioregsel: u32,
    redirection: [u64; IOAPIC_PINS],
    router: Box<dyn MsiRouter>,
}

impl Ioapic {
    /// An IOAPIC in its reset state (ID 0, every entry masked). The router
    /// is not called until an entry changes: at reset there are no routes.
    pub fn new(router: Box<dyn MsiRouter>) -> Self {
        Ioapic {
            id: 0,
            ioregsel: 0,
            redirection: [RTE_RESET; IOAPIC_PINS],
            router,
        }
    }

    /// The route of `pin` (None: masked, or no such pin). Level-triggered
    /// entries are routed as edge (see the module documentation).
    pub fn pin_route(&self, pin: usize) -> Option<MsiMessage> {
        let rte = *self.redirection.get(pin)?;
        if rte & RTE_MASKED != 0 {
            return None;
        }
        let mut msi = MsiMessage::from_rte(rte);
        msi.data &= !(1 << MSI_DATA_TRIGGER_SHIFT);
        Some(msi)
    }

    /// Guest read at `offset` from [`IOAPIC_BASE`].
    pub fn mmio_read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match (offset, data.len()) {
            (IOREGSEL, 4) => Some(self.ioregsel),
            (IOWIN, 4) => Some(self.read_register(self.ioregsel)),
            _ => None,
        };
        match value {
            Some(value) => data.copy_from_slice(&value.to_le_bytes()),
            None => data.fill(0xFF),
        }
    }

    /// Guest write at `offset` from [`IOAPIC_BASE`].
    pub fn mmio_write(&mut self, offset: u64, data: &[u8]) {
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return;
        };
        let value = u32::from_le_bytes(bytes);
        match offset {
            // IOREGSEL is an 8-bit register; the upper bits are reserved.
            IOREGSEL => self.ioregsel = value & 0xFF,
            IOWIN => self.write_register(self.ioregsel, value),
            _ => {}
        }
    }

    fn read_register(&self, index: u32) -> u32 {
        match index {
            REG_ID | REG_ARBITRATION => self.id,
            REG_VERSION => IOAPIC_VERSION,
            REG_REDTBL..REG_REDTBL_END => {
                let (pin, high) = Self::redirection_slot(index);
                let rte = self.redirection[pin];
                if high {
                    (rte >> 32) as u32
                } else {
                    rte as u32
                }
            }
            _ => u32::MAX,
        }
    }

    fn write_register(&mut self, index: u32, value: u32) {
        match index {
            REG_ID => self.id = value & ID_MASK,
            REG_REDTBL..REG_REDTBL_END => {
                let (pin, high) = Self::redirection_slot(index);
                let old = self.redirection[pin];
                let merged = if high {
                    (old & 0xFFFF_FFFF) | (u64::from(value) << 32)
                } else {
                    (old & !0xFFFF_FFFF) | u64::from(value)
                };
                let new = merged & RTE_WRITABLE;
                if new != old {
                    self.redirection[pin] = new;
                    let route = self.pin_route(pin);
                    self.router.set_route(pin, route);
                }
            }
            // Version and arbitration are read-only; other indexes are
            // not implemented.
            _ => {}
        }
    }

    /// Pin and half of a redirection-table index (caller checked the range).
    fn redirection_slot(index: u32) -> (usize, bool) {
        let offset = index - REG_REDTBL;
        ((offset / 2) as usize, offset % 2 == 1)
    }
}

impl super::bus::BusDevice for Ioapic {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.mmio_read(offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.mmio_write(offset, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    type Routes = Arc<Mutex<Vec<(usize, Option<MsiMessage>)>>>;

    struct Recorder(Routes);
    impl MsiRouter for Recorder {
        fn set_route(&mut self, pin: usize, msi: Option<MsiMessage>) {
            self.0.lock().unwrap().push((pin, msi));
        }
    }

    fn ioapic() -> (Ioapic, Routes) {
        let routes = Routes::default();
        (Ioapic::new(Box::new(Recorder(routes.clone()))), routes)
    }

    fn read(io: &mut Ioapic, index: u32) -> u32 {
        io.mmio_write(IOREGSEL, &index.to_le_bytes());
        let mut data = [0u8; 4];
        io.mmio_read(IOWIN, &mut data);
        u32::from_le_bytes(data)
    }

    fn write(io: &mut Ioapic, index: u32, value: u32) {
        io.mmio_write(IOREGSEL, &index.to_le_bytes());
        io.mmio_write(IOWIN, &value.to_le_bytes());
    }

    #[test]
    fn version_id_and_arbitration() {
        let (mut io, _) = ioapic();
        assert_eq!(read(&mut io, REG_VERSION), 0x0017_0011);
        assert_eq!((read(&mut io, REG_VERSION) >> 16) & 0xFF, 23);
        assert_eq!(read(&mut io, REG_ID), 0);
        write(&mut io, REG_ID, 0xFFFF_FFFF);
        assert_eq!(read(&mut io, REG_ID), 0x0F00_0000);
        assert_eq!(read(&mut io, REG_ARBITRATION), 0x0F00_0000);
        // Read-only registers ignore writes.
        write(&mut io, REG_VERSION, 0);
        write(&mut io, REG_ARBITRATION, 0);
        assert_eq!(read(&mut io, REG_VERSION), IOAPIC_VERSION);
        assert_eq!(read(&mut io, REG_ARBITRATION), 0x0F00_0000);
        // IOREGSEL reads back (8 bits).
        io.mmio_write(IOREGSEL, &0x1234_5611u32.to_le_bytes());
        let mut data = [0u8; 4];
        io.mmio_read(IOREGSEL, &mut data);
        assert_eq!(u32::from_le_bytes(data), 0x11);
    }

    #[test]
    fn masked_by_default() {
        let (mut io, routes) = ioapic();
        for pin in 0..IOAPIC_PINS as u32 {
            assert_eq!(read(&mut io, REG_REDTBL + 2 * pin), 1 << 16);
            assert_eq!(read(&mut io, REG_REDTBL + 2 * pin + 1), 0);
            assert_eq!(io.pin_route(pin as usize), None);
        }
        assert!(routes.lock().unwrap().is_empty());
    }

    #[test]
    fn redirection_entry_round_trip() {
        let (mut io, _) = ioapic();
        // Every writable bit, plus the read-only delivery status (12) and
        // remote IRR (14) and reserved bits, which must not stick.
        write(&mut io, REG_REDTBL + 2 * 7, 0xFFFF_FFFF);
        write(&mut io, REG_REDTBL + 2 * 7 + 1, 0xFFFF_FFFF);
        assert_eq!(read(&mut io, REG_REDTBL + 2 * 7), 0x0001_AFFF);
        assert_eq!(read(&mut io, REG_REDTBL + 2 * 7 + 1), 0xFF00_0000);
        write(&mut io, REG_REDTBL + 2 * 23, 0x0000_A941);
        write(&mut io, REG_REDTBL + 2 * 23 + 1, 0x0300_0000);
        assert_eq!(read(&mut io, REG_REDTBL + 2 * 23), 0x0000_A941);
        assert_eq!(read(&mut io, REG_REDTBL + 2 * 23 + 1), 0x0300_0000);
        // Neighbours untouched.
        assert_eq!(read(&mut io, REG_REDTBL + 2 * 22), 1 << 16);
    }

    #[test]
    fn msi_for_programmed_entry() {
        let (mut io, routes) = ioapic();
        // Pin 4 (COM1): destination 3 first (still masked), then vector
        // 0x30, fixed, physical, active high, edge, unmasked.
        write(&mut io, REG_REDTBL + 2 * 4 + 1, 3 << 24);
        write(&mut io, REG_REDTBL + 2 * 4, 0x30);
        let expected = MsiMessage {
            address_lo: 0xFEE0_3000,
            address_hi: 0,
            data: 0x30,
        };
        assert_eq!(io.pin_route(4), Some(expected));
        assert_eq!(
            *routes.lock().unwrap(),
            vec![(4, None), (4, Some(expected))]
        );
        // Rewriting the same value is no change: no new route.
        write(&mut io, REG_REDTBL + 2 * 4, 0x30);
        assert_eq!(routes.lock().unwrap().len(), 2);
        // Logical destination mode, lowest priority.
        write(&mut io, REG_REDTBL + 2 * 4, 0x0000_0930);
        assert_eq!(
            io.pin_route(4),
            Some(MsiMessage {
                address_lo: 0xFEE0_3004,
                address_hi: 0,
                data: 0x130,
            })
        );
        // Masking removes the route.
        write(&mut io, REG_REDTBL + 2 * 4, 0x0001_0930);
        assert_eq!(io.pin_route(4), None);
        assert_eq!(routes.lock().unwrap().last(), Some(&(4, None)));
    }

    #[test]
    fn level_entries_are_routed_as_edge() {
        let (mut io, _) = ioapic();
        write(&mut io, REG_REDTBL + 2 * 9, 0x0000_A041);
        let rte = 0x0000_A041u64;
        assert_eq!(MsiMessage::from_rte(rte).data, 0x8041);
        assert_eq!(io.pin_route(9).map(|m| m.data), Some(0x0041));
    }

    #[test]
    fn hostile_accesses_are_answered_without_panic() {
        let (mut io, routes) = ioapic();
        // Wrong sizes.
        for len in [0usize, 1, 2, 3, 5, 8] {
            let mut data = vec![0u8; len];
            io.mmio_read(IOWIN, &mut data);
            assert!(data.iter().all(|&b| b == 0xFF));
            io.mmio_write(IOREGSEL, &vec![0x10; len]);
            io.mmio_write(IOWIN, &vec![0; len]);
        }
        assert_eq!(read(&mut io, REG_REDTBL), 1 << 16);
        // Offsets other than IOREGSEL and IOWIN, inside and outside the page.
        for offset in [0x4, 0x8, 0x11, 0x20, 0x40, 0xFFC, 0x1000, u64::MAX] {
            let mut data = [0u8; 4];
            io.mmio_read(offset, &mut data);
            assert_eq!(data, [0xFF; 4]);
            io.mmio_write(offset, &[0; 4]);
        }
        // Indexes past the redirection table.
        for index in [0x03, 0x0F, REG_REDTBL_END, 0x80, 0xFF, 0xFFFF_FFFF] {
            assert_eq!(read(&mut io, index), u32::MAX);
            write(&mut io, index, 0);
        }
        assert_eq!(io.pin_route(IOAPIC_PINS), None);
        assert_eq!(io.pin_route(usize::MAX), None);
        assert!(routes.lock().unwrap().is_empty());
        assert_eq!(read(&mut io, REG_VERSION), IOAPIC_VERSION);
    }
}
