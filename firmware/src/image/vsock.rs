//! A polled virtio-vsock stream driver (virtio 1.2 §5.10) over the
//! device's three queues (rx 0, tx 1, event 2): packets with their
//! 44-byte header (§5.10.6) and the credit accounting of §5.10.6.3, used
//! by `vsock-echo` and the KBS client.

use crate::virtio::{Buf, Device, VirtioError, DESC_WRITE, ID_VSOCK};
use core::ptr;

const RX: usize = 0;
const TX: usize = 1;
/// The host's CID (virtio 1.2 §5.10.4).
pub const HOST_CID: u64 = 2;
const HEADER: u64 = 44;
/// Connection request.
pub const OP_REQUEST: u16 = 1;
/// Connection accepted.
pub const OP_RESPONSE: u16 = 2;
/// Connection reset.
pub const OP_RST: u16 = 3;
/// Orderly shutdown.
pub const OP_SHUTDOWN: u16 = 4;
/// Payload.
pub const OP_RW: u16 = 5;
/// Credit update (the peer's buffer space changed).
pub const OP_CREDIT_UPDATE: u16 = 6;
/// Credit request (the sender asks for an update).
pub const OP_CREDIT_REQUEST: u16 = 7;
/// Bytes of each rx buffer after its header.
pub const RX_DATA: u64 = 256;
/// Rx buffers kept posted.
const RX_BUFFERS: u64 = 4;
/// Largest payload of one tx packet: the tx page less the header.
pub const TX_DATA: usize = 4096 - HEADER as usize;
/// Receive space the guest advertises. What it receives is copied out of
/// the rx buffers at once, so the space is the consumer's (the heap).
const BUF_ALLOC: u32 = 1 << 20;
/// Consumed bytes after which the guest tells the host (credit update).
const CREDIT_STEP: u32 = 64 << 10;

/// The fields of a received header the drivers use.
#[derive(Clone, Copy, Debug)]
pub struct Header {
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub op: u16,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

fn put<T>(addr: u64, value: T) {
    // SAFETY: callers write inside the device's buffer pages.
    unsafe { ptr::write_unaligned(addr as *mut T, value) }
}

fn get<T: Copy>(addr: u64) -> T {
    // SAFETY: callers read inside the device's buffer pages.
    unsafe { ptr::read_unaligned(addr as *const T) }
}

/// The vsock device with its rx buffers posted.
pub struct Vsock {
    dev: Device,
    /// The guest's CID, from the device configuration.
    pub cid: u64,
    tx: u64,
    rx: u64,
    /// Payload bytes consumed on the current connection (`current`:
    /// local and peer port), and the count the host was last told. Credit
    /// is per connection (§5.10.6.3); the driver's users run one connection
    /// at a time and call [`Vsock::new_connection`] before the next.
    fwd_cnt: u32,
    current: (u32, u32),
    reported: u32,
}

impl Vsock {
    /// Finds and sets up the device.
    pub fn open() -> Result<Self, VirtioError> {
        let dev = Device::open_queues(ID_VSOCK, 0, 3)?;
        let cid = u64::from(dev.config32(0)?) | (u64::from(dev.config32(4)?) << 32);
        let tx = dev.buffers;
        let rx = dev.buffers + 0x1000;
        let mut v = Vsock {
            dev,
            cid,
            tx,
            rx,
            fwd_cnt: 0,
            reported: 0,
            current: (0, 0),
        };
        for i in 0..RX_BUFFERS {
            v.post_rx(i)?;
        }
        Ok(v)
    }

    /// Starts the credit count of the connection between guest port
    /// `local` and host port `peer`.
    pub fn new_connection(&mut self, local: u32, peer: u32) {
        self.fwd_cnt = 0;
        self.reported = 0;
        self.current = (local, peer);
    }

    fn rx_buffer(&self, i: u64) -> u64 {
        self.rx + i * (HEADER + RX_DATA)
    }

    fn post_rx(&mut self, i: u64) -> Result<(), VirtioError> {
        let addr = self.rx_buffer(i);
        let len = (HEADER + RX_DATA) as u32;
        self.dev
            .submit(
                RX,
                &[Buf {
                    addr,
                    len,
                    flags: DESC_WRITE,
                }],
            )
            .map(|_| ())
    }

    /// Sends one packet (at most [`TX_DATA`] bytes of payload).
    pub fn send(
        &mut self,
        src_port: u32,
        dst_port: u32,
        op: u16,
        data: &[u8],
    ) -> Result<(), VirtioError> {
        let data = &data[..data.len().min(TX_DATA)];
        let h = self.tx;
        put(h, self.cid);
        put(h + 8, HOST_CID);
        put(h + 16, src_port);
        put(h + 20, dst_port);
        put(h + 24, data.len() as u32);
        put(h + 28, 1u16); // TYPE_STREAM
        put(h + 30, op);
        put(h + 32, 0u32);
        put(h + 36, BUF_ALLOC);
        put(h + 40, self.fwd_cnt);
        self.reported = self.fwd_cnt;
        for (i, b) in data.iter().enumerate() {
            put(h + HEADER + i as u64, *b);
        }
        let len = (HEADER as usize + data.len()) as u32;
        self.dev.submit(
            TX,
            &[Buf {
                addr: h,
                len,
                flags: 0,
            }],
        )?;
        self.dev.wait_used(TX).map(|_| ())
    }

    /// The next packet the host sent, with its payload copied to `data`
    /// (at most [`RX_DATA`] bytes); the rx buffer is posted again. Payload
    /// counts as consumed; a credit update goes out every [`CREDIT_STEP`].
    pub fn receive(&mut self, data: &mut [u8]) -> Result<Header, VirtioError> {
        let (head, _) = self.dev.wait_used(RX)?;
        // Each rx chain is one descriptor; head i is buffer i.
        let i = u64::from(head) % RX_BUFFERS;
        let b = self.rx_buffer(i);
        let header = Header {
            src_port: get(b + 16),
            dst_port: get(b + 20),
            len: get(b + 24),
            op: get(b + 30),
            buf_alloc: get(b + 36),
            fwd_cnt: get(b + 40),
        };
        let n = (header.len as usize).min(data.len()).min(RX_DATA as usize);
        for (k, slot) in data.iter_mut().take(n).enumerate() {
            *slot = get(b + HEADER + k as u64);
        }
        self.post_rx(i)?;
        if header.op == OP_RW && (header.dst_port, header.src_port) == self.current {
            self.fwd_cnt = self.fwd_cnt.wrapping_add(header.len.min(RX_DATA as u32));
            if self.fwd_cnt.wrapping_sub(self.reported) >= CREDIT_STEP {
                self.send(header.dst_port, header.src_port, OP_CREDIT_UPDATE, &[])?;
            }
        }
        Ok(header)
    }
}
