//! The 16550 UART on COM1 (vm-superio), with its output going to stdout, a
//! file or nowhere, and the time of the first byte recorded for metrics.

use super::bus::BusDevice;
use std::io::Write;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// COM1 base port.
pub const COM1: u16 = 0x3F8;
/// COM1's ISA IRQ line, an IOAPIC pin (and GSI) of the same number.
pub const COM1_IRQ: u32 = 4;

/// Raises the UART's interrupt through an eventfd registered as an irqfd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// A writer that notes when the first byte went out and flushes every write
/// so the console is live.
pub struct ConsoleWriter {
    inner: Box<dyn Write + Send>,
    first_byte: Arc<OnceLock<Instant>>,
}

impl ConsoleWriter {
    /// Wraps `inner`; `first_byte` is set on the first write.
    pub fn new(inner: Box<dyn Write + Send>, first_byte: Arc<OnceLock<Instant>>) -> Self {
        ConsoleWriter { inner, first_byte }
    }
}

impl Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.first_byte.get_or_init(Instant::now);
        self.inner.write_all(buf)?;
        self.inner.flush()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The UART device.
pub struct SerialPort {
    uart: Serial<IrqTrigger, NoEvents, ConsoleWriter>,
}

impl SerialPort {
    /// A UART writing to `out` and signalling `irq`.
    pub fn new(irq: EventFd, out: ConsoleWriter) -> Self {
        SerialPort {
            uart: Serial::new(IrqTrigger(irq), out),
        }
    }
}

impl SerialPort {
    /// Queues console input for the guest; returns how many bytes fit in
    /// the receive FIFO (the rest is dropped, as a UART overruns).
    pub fn enqueue_input(&mut self, input: &[u8]) -> usize {
        match self.uart.enqueue_raw_bytes(input) {
            Ok(n) => n,
            Err(e) => {
                log::debug!("serial input dropped: {e:?}");
                0
            }
        }
    }
}

impl BusDevice for SerialPort {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = self.uart.read(offset as u8);
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(&value) = data.first() {
            // A write error means the console sink failed (e.g. a closed
            // pipe); the guest must not be able to stop the VMM through it.
            if let Err(e) = self.uart.write(offset as u8, value) {
                log::debug!("serial write failed: {e:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn transmits_bytes_and_records_first_byte_time() {
        let sink = Arc::new(Mutex::new(Vec::new()));
        let first = Arc::new(OnceLock::new());
        let writer = ConsoleWriter::new(Box::new(Shared(sink.clone())), first.clone());
        let mut port = SerialPort::new(EventFd::new(0).unwrap(), writer);
        assert!(first.get().is_none());
        for b in b"hi\n" {
            port.write(0, &[*b]);
        }
        assert_eq!(&*sink.lock().unwrap(), b"hi\n");
        assert!(first.get().is_some());
        // LSR: transmitter empty bits set, as the firmware polls for.
        let mut lsr = [0u8];
        port.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0);
    }
}
