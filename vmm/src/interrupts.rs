//! The interrupt path of a firmware boot: KVM's split irqchip keeps the
//! local APICs in the kernel (the guest drives them in x2APIC mode, through
//! MSRs KVM handles itself, so the SNP model cannot police them), and the
//! IOAPIC lives in userspace (`devices::ioapic`) on the MMIO bus. Each
//! redirection entry the guest programs becomes a KVM MSI route for the GSI
//! of the same number, so a device's irqfd on that GSI reaches the vCPU
//! without a VMM round trip (cloud-hypervisor's design).

use crate::backend::{MsiMessage, Vm};
use crate::devices::bus::{Bus, BusError};
use crate::devices::ioapic::{Ioapic, MsiRouter, IOAPIC_BASE, IOAPIC_PINS, IOAPIC_SIZE};
use std::sync::{Arc, Mutex};

/// IOAPIC inputs given to KVM's split irqchip.
pub(crate) const SPLIT_IRQCHIP_PINS: u32 = IOAPIC_PINS as u32;

/// Turns IOAPIC routes into the VM's GSI routing table.
struct GsiRouter<V: Vm> {
    vm: Arc<V>,
    routes: [Option<MsiMessage>; IOAPIC_PINS],
}

impl<V: Vm + 'static> MsiRouter for GsiRouter<V> {
    fn set_route(&mut self, pin: usize, msi: Option<MsiMessage>) {
        let Some(slot) = self.routes.get_mut(pin) else {
            return;
        };
        *slot = msi;
        let table: Vec<(u32, MsiMessage)> = self
            .routes
            .iter()
            .zip(0u32..)
            .filter_map(|(route, gsi)| route.map(|msi| (gsi, msi)))
            .collect();
        // The guest programmed the entry; a refusal here is a host problem
        // the guest sees as a lost interrupt. Say so once per change.
        if let Err(e) = self.vm.set_msi_routes(&table) {
            log::error!("IOAPIC pin {pin}: {}", crate::error::error_chain(&e));
        }
    }
}

/// Places the userspace IOAPIC at its architectural address.
pub(crate) fn attach_ioapic<V: Vm + 'static>(vm: &Arc<V>, mmio: &mut Bus) -> Result<(), BusError> {
    let router = GsiRouter {
        vm: vm.clone(),
        routes: [None; IOAPIC_PINS],
    };
    let ioapic = Arc::new(Mutex::new(Ioapic::new(Box::new(router))));
    mmio.insert(IOAPIC_BASE, IOAPIC_SIZE, ioapic)
}
