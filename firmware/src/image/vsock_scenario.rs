//! The `vsock-echo` scenario: a guest-initiated stream to host port 1234
//! (the host echoes what it gets), then a host-initiated stream to guest
//! port 5000 (the guest echoes what it gets), over the driver's three
//! vsock queues (rx 0, tx 1, event 2). Packet header: virtio 1.2 §5.10.6.

use crate::virtio::VirtioError;
use crate::vsock::{Vsock, OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW, OP_SHUTDOWN, RX_DATA};
use crate::{io, EXIT_FAILED};

const GUEST_PORT: u32 = 1025;
const HOST_ECHO_PORT: u32 = 1234;
const LISTEN_PORT: u32 = 5000;
const MESSAGE: &[u8] = b"hello from the guest over vsock";

fn fail(what: &str) -> u32 {
    io::print("vsock-echo: ");
    io::print(what);
    io::print(": fail\n");
    EXIT_FAILED
}

fn run() -> Result<u32, VirtioError> {
    let mut s = Vsock::open()?;
    let mut data = [0u8; RX_DATA as usize];
    // 1. Guest-initiated: connect to the host's echo service.
    // The host may connect to port 5000 at any moment: a REQUEST for it
    // that arrives first is kept for step 2.
    let mut host_request = None;
    s.new_connection(GUEST_PORT, HOST_ECHO_PORT);
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
    s.new_connection(LISTEN_PORT, peer);
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
