//! virtio-vsock (virtio 1.2 §5.10) with Firecracker's hybrid vsock on the
//! host: one Unix socket `PATH` stands for the host (CID 2).
//!
//! - Host-initiated: a host program connects to `PATH` and sends
//!   `CONNECT <port>\n` (verb in any case, as Kata sends it); umbra sends
//!   the guest a REQUEST to `<port>` and, when the guest answers RESPONSE,
//!   writes `OK <host_port>\n` back; then bytes flow both ways.
//! - Guest-initiated: a REQUEST to CID 2 port `P` makes umbra connect to
//!   the Unix socket `PATH_P`; it answers RESPONSE if that worked and RST
//!   if not.
//!
//! Credit-based flow control (§5.10.6.3): umbra sends no more than the
//! guest's `buf_alloc - (sent - fwd_cnt)` and advertises its own buffer.
//! Packets are virtio-vsock's `VsockPacket`, parsed over the filtered
//! memory while the DMA filter is held (its slices outlive one copy).

use super::{DeviceIo, VirtioDevice};
use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use thiserror::Error;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use virtio_vsock::packet::{VsockPacket, PKT_HEADER_SIZE};
use vm_memory::Bytes;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

/// Device ID (§5.10.1).
const DEVICE_ID: u32 = 19;
/// The host's CID.
const HOST_CID: u64 = 2;
/// Queues: rx, tx, event.
const RX: usize = 0;
const TX: usize = 1;
/// VIRTIO_VSOCK_TYPE_STREAM.
const TYPE_STREAM: u16 = 1;
/// Operations (§5.10.6).
const OP_REQUEST: u16 = 1;
const OP_RESPONSE: u16 = 2;
const OP_RST: u16 = 3;
const OP_SHUTDOWN: u16 = 4;
const OP_RW: u16 = 5;
const OP_CREDIT_UPDATE: u16 = 6;
const OP_CREDIT_REQUEST: u16 = 7;
/// SHUTDOWN flags: both directions.
const SHUTDOWN_BOTH: u32 = 3;
/// The buffer umbra advertises per connection.
const BUF_ALLOC: u32 = 256 << 10;
/// Largest payload per packet.
const MAX_PAYLOAD: u32 = 64 << 10;
/// Longest `CONNECT <port>\n` line.
const MAX_CONNECT_LINE: usize = 32;
/// Most connections at once (a guest cannot make umbra open more).
const MAX_CONNECTIONS: usize = 1024;
/// First local port of host-initiated connections.
const FIRST_HOST_PORT: u32 = 1 << 30;
/// epoll token of the listener; handshakes and connections get others.
const LISTENER: u64 = u64::MAX;
const HANDSHAKE: u64 = 1 << 63;

/// Why the vsock device could not start.
#[derive(Debug, Error)]
pub enum VsockError {
    /// The Unix socket could not be bound.
    #[error("cannot listen on {path}")]
    Listen {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The device's epoll could not be set up.
    #[error("cannot set up the vsock event set")]
    Epoll(#[source] std::io::Error),
}

/// A control packet waiting for an rx buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Control {
    local_port: u32,
    peer_port: u32,
    op: u16,
    flags: u32,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Host-initiated, REQUEST sent, waiting for the guest's RESPONSE.
    Connecting,
    Established,
}

struct Connection {
    stream: UnixStream,
    state: State,
    /// Bytes sent to the guest.
    sent: u32,
    /// The guest's buffer and how much of what we sent it consumed.
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// Bytes from the guest written to the stream.
    fwd_cnt: u32,
    /// `fwd_cnt` when the guest last heard it.
    fwd_cnt_told: u32,
    /// Whether the stream is being watched for input.
    watching: bool,
}

impl Connection {
    /// A connection in `state` whose guest side advertised `buf_alloc`
    /// and `fwd_cnt` (zero until it answers).
    fn new(stream: UnixStream, state: State, buf_alloc: u32, fwd_cnt: u32) -> Self {
        let watching = state == State::Established;
        Connection {
            stream,
            state,
            sent: 0,
            peer_buf_alloc: buf_alloc,
            peer_fwd_cnt: fwd_cnt,
            fwd_cnt: 0,
            fwd_cnt_told: 0,
            watching,
        }
    }

    fn credit(&self) -> u32 {
        let in_flight = self.sent.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }
}

/// The vsock device.
pub(crate) struct Vsock {
    cid: u64,
    path: PathBuf,
    listener: UnixListener,
    epoll: Epoll,
    handshakes: HashMap<u64, (UnixStream, Vec<u8>)>,
    next_handshake: u64,
    connections: HashMap<(u32, u32), Connection>,
    control: VecDeque<Control>,
    next_host_port: u32,
}

fn token(local_port: u32, peer_port: u32) -> u64 {
    (u64::from(local_port) << 32) | u64::from(peer_port)
}

impl Vsock {
    /// Listens on `path` for host-initiated connections to guest `cid`.
    pub(crate) fn new(cid: u64, path: &Path) -> Result<Self, VsockError> {
        // A stale socket from an earlier run would make bind fail.
        if std::fs::symlink_metadata(path).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_socket()
        }) {
            let _ = std::fs::remove_file(path);
        }
        let listen_error = |source| VsockError::Listen {
            path: path.to_path_buf(),
            source,
        };
        let listener = UnixListener::bind(path).map_err(listen_error)?;
        listener.set_nonblocking(true).map_err(listen_error)?;
        let epoll = Epoll::new().map_err(VsockError::Epoll)?;
        epoll
            .ctl(
                ControlOperation::Add,
                listener.as_raw_fd(),
                EpollEvent::new(EventSet::IN, LISTENER),
            )
            .map_err(VsockError::Epoll)?;
        Ok(Vsock {
            cid,
            path: path.to_path_buf(),
            listener,
            epoll,
            handshakes: HashMap::new(),
            next_handshake: 0,
            connections: HashMap::new(),
            control: VecDeque::new(),
            next_host_port: FIRST_HOST_PORT,
        })
    }

    fn watch(&self, fd: RawFd, token: u64, on: bool) {
        let events = if on { EventSet::IN } else { EventSet::empty() };
        let _ = self
            .epoll
            .ctl(ControlOperation::Modify, fd, EpollEvent::new(events, token));
    }

    fn close(&mut self, key: (u32, u32)) {
        if let Some(conn) = self.connections.remove(&key) {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                conn.stream.as_raw_fd(),
                EpollEvent::default(),
            );
        }
    }

    fn reset(&mut self, local_port: u32, peer_port: u32) {
        self.close((local_port, peer_port));
        self.control.push_back(Control {
            local_port,
            peer_port,
            op: OP_RST,
            flags: 0,
        });
    }

    /// Accepts host connections and reads their `CONNECT` lines.
    fn serve_host_sockets(&mut self) {
        let mut events = [EpollEvent::default(); 32];
        let ready = self.epoll.wait(0, &mut events).unwrap_or(0);
        for event in &events[..ready] {
            let token = event.data();
            if token == LISTENER {
                while let Ok((stream, _)) = self.listener.accept() {
                    if stream.set_nonblocking(true).is_err()
                        || self.handshakes.len() + self.connections.len() >= MAX_CONNECTIONS
                    {
                        continue;
                    }
                    let id = HANDSHAKE | self.next_handshake;
                    self.next_handshake += 1;
                    let fd = stream.as_raw_fd();
                    if self
                        .epoll
                        .ctl(ControlOperation::Add, fd, EpollEvent::new(EventSet::IN, id))
                        .is_ok()
                    {
                        self.handshakes.insert(id, (stream, Vec::new()));
                    }
                }
            } else if token & HANDSHAKE != 0 {
                self.read_connect_line(token);
            } else {
                // Data waits for rx buffers: `fill_rx` reads it, and the
                // stream is not watched again until a read would block
                // (a level-triggered watch would spin while the guest
                // posts no buffers).
                let key = ((token >> 32) as u32, token as u32);
                if let Some(conn) = self.connections.get_mut(&key) {
                    conn.watching = true;
                    let fd = conn.stream.as_raw_fd();
                    self.watch(fd, token, false);
                }
            }
        }
    }

    fn read_connect_line(&mut self, id: u64) {
        let Some((stream, line)) = self.handshakes.get_mut(&id) else {
            return;
        };
        let mut byte = [0u8; 1];
        let done = loop {
            match stream.read(&mut byte) {
                Ok(0) => break Err(()),
                Ok(_) if byte[0] == b'\n' => break Ok(()),
                Ok(_) if line.len() < MAX_CONNECT_LINE => line.push(byte[0]),
                Ok(_) => break Err(()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => break Err(()),
            }
        };
        let Some((stream, line)) = self.handshakes.remove(&id) else {
            return;
        };
        let _ = self.epoll.ctl(
            ControlOperation::Delete,
            stream.as_raw_fd(),
            EpollEvent::default(),
        );
        let port = done.ok().and_then(|()| parse_connect(&line));
        let Some(peer_port) = port else {
            let mut stream = stream;
            let _ = stream.write_all(b"ERROR\n");
            return;
        };
        let local_port = self.next_host_port;
        self.next_host_port = self.next_host_port.wrapping_add(1).max(FIRST_HOST_PORT);
        let fd = stream.as_raw_fd();
        // Not watched until the guest accepts.
        if self
            .epoll
            .ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::empty(), token(local_port, peer_port)),
            )
            .is_err()
        {
            return;
        }
        self.connections.insert(
            (local_port, peer_port),
            Connection::new(stream, State::Connecting, 0, 0),
        );
        self.control.push_back(Control {
            local_port,
            peer_port,
            op: OP_REQUEST,
            flags: 0,
        });
    }

    /// A guest REQUEST to host port `local_port`: connect to `PATH_<port>`.
    fn guest_connect(&mut self, local_port: u32, peer_port: u32, buf_alloc: u32, fwd_cnt: u32) {
        let target = PathBuf::from(format!("{}_{local_port}", self.path.display()));
        let stream = match UnixStream::connect(&target) {
            Ok(stream) if self.connections.len() < MAX_CONNECTIONS => stream,
            _ => {
                self.reset(local_port, peer_port);
                return;
            }
        };
        if stream.set_nonblocking(true).is_err()
            || self
                .epoll
                .ctl(
                    ControlOperation::Add,
                    stream.as_raw_fd(),
                    EpollEvent::new(EventSet::IN, token(local_port, peer_port)),
                )
                .is_err()
        {
            self.reset(local_port, peer_port);
            return;
        }
        self.connections.insert(
            (local_port, peer_port),
            Connection::new(stream, State::Established, buf_alloc, fwd_cnt),
        );
        self.control.push_back(Control {
            local_port,
            peer_port,
            op: OP_RESPONSE,
            flags: 0,
        });
    }

    /// One packet from the guest.
    fn guest_packet(&mut self, pkt: &VsockPacket<'_, ()>) {
        let key = (pkt.dst_port(), pkt.src_port());
        let (local_port, peer_port) = key;
        if pkt.src_cid() != self.cid || pkt.dst_cid() != HOST_CID || pkt.type_() != TYPE_STREAM {
            if pkt.op() != OP_RST {
                self.reset(local_port, peer_port);
            }
            return;
        }
        let known = self.connections.contains_key(&key);
        match (pkt.op(), known) {
            (OP_REQUEST, false) => {
                self.guest_connect(local_port, peer_port, pkt.buf_alloc(), pkt.fwd_cnt())
            }
            (OP_RST, _) => self.close(key),
            (OP_RESPONSE, true) => {
                let Some(conn) = self.connections.get_mut(&key) else {
                    return;
                };
                if conn.state != State::Connecting {
                    self.reset(local_port, peer_port);
                    return;
                }
                conn.state = State::Established;
                conn.peer_buf_alloc = pkt.buf_alloc();
                conn.peer_fwd_cnt = pkt.fwd_cnt();
                conn.watching = true;
                let ok = format!("OK {local_port}\n");
                let fd = conn.stream.as_raw_fd();
                if conn.stream.write_all(ok.as_bytes()).is_err() {
                    self.reset(local_port, peer_port);
                    return;
                }
                self.watch(fd, token(local_port, peer_port), true);
            }
            (OP_RW, true) => {
                let Some(conn) = self.connections.get_mut(&key) else {
                    return;
                };
                conn.peer_buf_alloc = pkt.buf_alloc();
                conn.peer_fwd_cnt = pkt.fwd_cnt();
                let mut data = vec![0u8; pkt.len() as usize];
                let copied = pkt
                    .data_slice()
                    .map(|slice| slice.read_slice(&mut data, 0).is_ok())
                    .unwrap_or(data.is_empty());
                // The host end is a local Unix socket: a short blocking
                // write is the whole of the flow control umbra needs there.
                let written = copied
                    && conn.stream.set_nonblocking(false).is_ok()
                    && conn.stream.write_all(&data).is_ok()
                    && conn.stream.set_nonblocking(true).is_ok();
                if !written {
                    self.reset(local_port, peer_port);
                    return;
                }
                conn.fwd_cnt = conn.fwd_cnt.wrapping_add(data.len() as u32);
                if conn.fwd_cnt.wrapping_sub(conn.fwd_cnt_told) >= BUF_ALLOC / 2 {
                    self.control.push_back(Control {
                        local_port,
                        peer_port,
                        op: OP_CREDIT_UPDATE,
                        flags: 0,
                    });
                }
            }
            (OP_CREDIT_UPDATE, true) => {
                if let Some(conn) = self.connections.get_mut(&key) {
                    conn.peer_buf_alloc = pkt.buf_alloc();
                    conn.peer_fwd_cnt = pkt.fwd_cnt();
                    conn.watching = true;
                }
            }
            (OP_CREDIT_REQUEST, true) => self.control.push_back(Control {
                local_port,
                peer_port,
                op: OP_CREDIT_UPDATE,
                flags: 0,
            }),
            (OP_SHUTDOWN, true) => {
                // umbra does not half-close: a shutdown ends the connection.
                self.reset(local_port, peer_port);
            }
            _ => self.reset(local_port, peer_port),
        }
    }

    /// Fills one rx chain with a control packet or stream data; returns
    /// the bytes written, or `None` when there was nothing to send.
    fn next_rx(&mut self, pkt: &mut VsockPacket<'_, ()>) -> Option<u32> {
        let header = |pkt: &mut VsockPacket<'_, ()>,
                      cid: u64,
                      c: &Control,
                      conn: Option<&mut Connection>| {
            let (buf_alloc, fwd_cnt) = match conn {
                Some(conn) => {
                    conn.fwd_cnt_told = conn.fwd_cnt;
                    (BUF_ALLOC, conn.fwd_cnt)
                }
                None => (0, 0),
            };
            pkt.set_src_cid(HOST_CID)
                .set_dst_cid(cid)
                .set_src_port(c.local_port)
                .set_dst_port(c.peer_port)
                .set_type(TYPE_STREAM)
                .set_op(c.op)
                .set_flags(c.flags)
                .set_len(0)
                .set_buf_alloc(buf_alloc)
                .set_fwd_cnt(fwd_cnt);
        };
        if let Some(c) = self.control.pop_front() {
            let conn = self.connections.get_mut(&(c.local_port, c.peer_port));
            header(pkt, self.cid, &c, conn);
            return Some(PKT_HEADER_SIZE as u32);
        }
        let capacity = pkt
            .data_slice()
            .map_or(0, |s| s.len() as u32)
            .min(MAX_PAYLOAD);
        let keys: Vec<(u32, u32)> = self
            .connections
            .iter()
            .filter(|(_, c)| c.watching && c.state == State::Established)
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            let Some(conn) = self.connections.get_mut(&key) else {
                continue;
            };
            let want = conn.credit().min(capacity) as usize;
            let fd = conn.stream.as_raw_fd();
            if want == 0 {
                // Resumed by a credit update or a larger buffer.
                conn.watching = false;
                self.watch(fd, token(key.0, key.1), false);
                continue;
            }
            let mut data = vec![0u8; want];
            match conn.stream.read(&mut data) {
                Ok(0) => {
                    let c = Control {
                        local_port: key.0,
                        peer_port: key.1,
                        op: OP_SHUTDOWN,
                        flags: SHUTDOWN_BOTH,
                    };
                    header(pkt, self.cid, &c, Some(conn));
                    self.close(key);
                    return Some(PKT_HEADER_SIZE as u32);
                }
                Ok(n) => {
                    let c = Control {
                        local_port: key.0,
                        peer_port: key.1,
                        op: OP_RW,
                        flags: 0,
                    };
                    conn.sent = conn.sent.wrapping_add(n as u32);
                    header(pkt, self.cid, &c, Some(conn));
                    let copied = pkt
                        .data_slice()
                        .is_some_and(|slice| slice.write_slice(&data[..n], 0).is_ok());
                    if !copied {
                        self.reset(key.0, key.1);
                        return None;
                    }
                    pkt.set_len(n as u32);
                    return Some((PKT_HEADER_SIZE + n) as u32);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    conn.watching = false;
                    self.watch(fd, token(key.0, key.1), true);
                }
                Err(_) => self.reset(key.0, key.1),
            }
        }
        None
    }

    /// Moves everything umbra has for the guest into rx buffers.
    fn fill_rx(&mut self, queues: &mut [Queue], io: &DeviceIo<'_>) -> bool {
        let Some(rx) = queues.get_mut(RX) else {
            return false;
        };
        let memory = io.memory.guest_dma();
        let mut used = false;
        loop {
            let pending = !self.control.is_empty()
                || self
                    .connections
                    .values()
                    .any(|c| c.watching && c.state == State::Established);
            if !pending {
                return used;
            }
            let Some(mut chain) = rx.pop_descriptor_chain(memory) else {
                return used;
            };
            let head = chain.head_index();
            let written = match VsockPacket::from_rx_virtq_chain(memory, &mut chain, MAX_PAYLOAD) {
                Ok(mut pkt) => match self.next_rx(&mut pkt) {
                    Some(n) => {
                        io.counters.request(u64::from(n));
                        n
                    }
                    None => {
                        // Nothing after all: give the buffer back.
                        rx.go_to_previous_position();
                        return used;
                    }
                },
                Err(e) => {
                    io.counters.error();
                    io.refused(&PacketError(e));
                    0
                }
            };
            if rx.add_used(memory, head, written).is_err() {
                return used;
            }
            used = true;
        }
    }
}

/// virtio-vsock's parse error, as a std error.
#[derive(Debug, Error)]
#[error("vsock packet: {0:?}")]
struct PacketError(virtio_vsock::packet::Error);

/// Parses `CONNECT <port>` (any case).
fn parse_connect(line: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let (verb, port) = text.split_once(' ')?;
    if !verb.eq_ignore_ascii_case("connect") {
        return None;
    }
    port.trim().parse().ok()
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        DEVICE_ID
    }

    fn kind(&self) -> &'static str {
        "virtio-vsock"
    }

    fn features(&self) -> u64 {
        0
    }

    fn queue_max_sizes(&self) -> &'static [u16] {
        &[256, 256, 16]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_vsock_config { le64 guest_cid; } (§5.10.4)
        let config = self.cid.to_le_bytes();
        super::read_config_bytes(&config, offset, data);
    }

    fn process(&mut self, index: usize, queues: &mut [Queue], io: &DeviceIo<'_>) -> bool {
        let _held = io.memory.hold();
        let mut used = false;
        if index == TX {
            let memory = io.memory.guest_dma();
            if let Some(tx) = queues.get_mut(TX) {
                while let Some(mut chain) = tx.pop_descriptor_chain(memory) {
                    let head = chain.head_index();
                    match VsockPacket::from_tx_virtq_chain(memory, &mut chain, MAX_PAYLOAD) {
                        Ok(pkt) => {
                            io.counters.request(u64::from(pkt.len()));
                            self.guest_packet(&pkt);
                        }
                        Err(e) => {
                            io.counters.error();
                            io.refused(&PacketError(e));
                        }
                    }
                    if tx.add_used(memory, head, 0).is_err() {
                        break;
                    }
                    used = true;
                }
            }
        }
        self.fill_rx(queues, io) || used
    }

    fn host_fd(&self) -> Option<RawFd> {
        Some(self.epoll.as_raw_fd())
    }

    fn host_event(&mut self, queues: &mut [Queue], io: &DeviceIo<'_>) -> bool {
        let _held = io.memory.hold();
        self.serve_host_sockets();
        self.fill_rx(queues, io)
    }

    fn reset(&mut self) {
        let keys: Vec<_> = self.connections.keys().copied().collect();
        for key in keys {
            self.close(key);
        }
        self.control.clear();
    }
}

impl Drop for Vsock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_lines_parse_in_any_case() {
        assert_eq!(parse_connect(b"CONNECT 5000"), Some(5000));
        assert_eq!(parse_connect(b"connect 52\r"), Some(52));
        assert_eq!(parse_connect(b"Connect 1"), Some(1));
        assert_eq!(parse_connect(b"CONNECT"), None);
        assert_eq!(parse_connect(b"OPEN 5000"), None);
        assert_eq!(parse_connect(b"CONNECT -1"), None);
    }
}
