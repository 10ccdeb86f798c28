//! The `vsock-echo` scenario: a guest-initiated stream to host port 1234
//! (the host echoes what it gets), then a host-initiated stream to guest
//! port 5000 (the guest echoes what it gets), over the driver's three
//! vsock queues (rx 0, tx 1, event 2). Packet header: virtio 1.2 §5.10.6.

use crate::virtio::{Buf, Device, VirtioError, DESC_WRITE, ID_VSOCK};
use crate::{io, EXIT_FAILED};
use core::ptr;

const RX: usize = 0;
const TX: usize = 1;
const HOST_CID: u64 = 2;
const HEADER: u64 = 44;
const OP_REQUEST: u16 = 1;
const OP_RESPONSE: u16 = 2;
const OP_RST: u16 = 3;
const OP_SHUTDOWN: u16 = 4;
const OP_RW: u16 = 5;
/// Bytes of each rx buffer after its header.
const RX_DATA: u64 = 256;
/// Rx buffers kept posted.
const RX_BUFFERS: u64 = 4;
const GUEST_PORT: u32 = 1025;
const HOST_ECHO_PORT: u32 = 1234;
const LISTEN_PORT: u32 = 5000;
const MESSAGE: &[u8] = b"hello from the guest over vsock";

#[derive(Clone, Copy)]
struct Header {
    src_port: u32,
    dst_port: u32,
    len: u32,
    op: u16,
}

fn put<T>(addr: u64, value: T) {
    // SAFETY: callers write inside the device's buffer pages.
    unsafe { ptr::write_unaligned(addr as *mut T, value) }
}

fn get<T: Copy>(addr: u64) -> T {
    // SAFETY: callers read inside the device's buffer pages.
    unsafe { ptr::read_unaligned(addr as *const T) }
}

struct Stream {
    dev: Device,
    cid: u64,
    tx: u64,
    rx: u64,
}

impl Stream {
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

    fn send(
        &mut self,
        src_port: u32,
        dst_port: u32,
        op: u16,
        data: &[u8],
    ) -> Result<(), VirtioError> {
        let h = self.tx;
        put(h, self.cid);
        put(h + 8, HOST_CID);
        put(h + 16, src_port);
        put(h + 20, dst_port);
        put(h + 24, data.len() as u32);
        put(h + 28, 1u16); // TYPE_STREAM
        put(h + 30, op);
        put(h + 32, 0u32);
        put(h + 36, 4096u32); // buf_alloc
        put(h + 40, 0u32); // fwd_cnt
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

    /// The next packet the host sent, with its payload copied to `data`;
    /// the rx buffer is posted again.
    fn receive(&mut self, data: &mut [u8]) -> Result<Header, VirtioError> {
        let (head, _) = self.dev.wait_used(RX)?;
        // Each rx chain is one descriptor; head i is buffer i.
        let i = u64::from(head) % RX_BUFFERS;
        let b = self.rx_buffer(i);
        let header = Header {
            src_port: get(b + 16),
            dst_port: get(b + 20),
            len: get(b + 24),
            op: get(b + 30),
        };
        let n = (header.len as usize).min(data.len()).min(RX_DATA as usize);
        for (k, slot) in data.iter_mut().take(n).enumerate() {
            *slot = get(b + HEADER + k as u64);
        }
        self.post_rx(i)?;
        Ok(header)
    }
}

fn fail(what: &str) -> u32 {
    io::print("vsock-echo: ");
    io::print(what);
    io::print(": fail\n");
    EXIT_FAILED
}

fn run() -> Result<u32, VirtioError> {
    let dev = Device::open_queues(ID_VSOCK, 0, 3)?;
    let cid = u64::from(dev.config32(0)?) | (u64::from(dev.config32(4)?) << 32);
    let tx = dev.buffers;
    let rx = dev.buffers + 0x1000;
    let mut s = Stream { dev, cid, tx, rx };
    for i in 0..RX_BUFFERS {
        s.post_rx(i)?;
    }
    let mut data = [0u8; RX_DATA as usize];
    // 1. Guest-initiated: connect to the host's echo service.
    // The host may connect to port 5000 at any moment: a REQUEST for it
    // that arrives first is kept for step 2.
    let mut host_request = None;
    s.send(GUEST_PORT, HOST_ECHO_PORT, OP_REQUEST, &[])?;
    let h = loop {
        let h = s.receive(&mut data)?;
        if h.op == OP_REQUEST && h.dst_port == LISTEN_PORT {
            host_request = Some(h.src_port);
            continue;
        }
        break h;
    };
    if h.op != OP_RESPONSE || h.src_port != HOST_ECHO_PORT {
        return Ok(fail("the host did not accept the connection to port 1234"));
    }
    s.send(GUEST_PORT, HOST_ECHO_PORT, OP_RW, MESSAGE)?;
    let mut echoed = 0usize;
    let mut back = [0u8; 64];
    while echoed < MESSAGE.len() {
        let h = s.receive(&mut data)?;
        if h.op == OP_REQUEST && h.dst_port == LISTEN_PORT {
            host_request = Some(h.src_port);
            continue;
        }
        if h.op != OP_RW {
            return Ok(fail("the echo connection ended early"));
        }
        for &b in data.iter().take(h.len as usize) {
            if echoed < back.len() {
                back[echoed] = b;
            }
            echoed += 1;
        }
    }
    if &back[..MESSAGE.len()] != MESSAGE {
        return Ok(fail("the host echoed different bytes"));
    }
    s.send(GUEST_PORT, HOST_ECHO_PORT, OP_SHUTDOWN, &[])?;
    io::print("vsock-echo: port 1234 echoed ");
    io::print_dec(MESSAGE.len() as u64);
    io::print(" bytes\n");
    // 2. Host-initiated: accept a connection to port 5000 and echo.
    let (peer, mut served) = loop {
        if let Some(peer) = host_request {
            break (peer, 0usize);
        }
        let h = s.receive(&mut data)?;
        if h.op == OP_REQUEST && h.dst_port == LISTEN_PORT {
            break (h.src_port, 0usize);
        }
        // RST of the first connection, credit updates: not for us.
    };
    s.send(LISTEN_PORT, peer, OP_RESPONSE, &[])?;
    loop {
        let h = s.receive(&mut data)?;
        if h.src_port != peer {
            continue;
        }
        match h.op {
            OP_RW => {
                let n = (h.len as usize).min(data.len());
                let copy = data;
                s.send(LISTEN_PORT, peer, OP_RW, &copy[..n])?;
                served += n;
            }
            OP_SHUTDOWN | OP_RST => break,
            _ => {}
        }
    }
    s.send(LISTEN_PORT, peer, OP_RST, &[])?;
    io::print("vsock-echo: port 5000 accepted a host connection and echoed ");
    io::print_dec(served as u64);
    io::print(" bytes: ok\n");
    Ok(if served > 0 {
        0
    } else {
        fail("the host sent nothing to port 5000")
    })
}

/// Runs the scenario.
pub fn vsock_echo() -> u32 {
    match run() {
        Ok(code) => code,
        Err(_) => fail("virtio-vsock device error or timeout"),
    }
}
