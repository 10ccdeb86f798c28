//! The `kbs` scenario: the Trustee KBS exchange from inside the guest,
//! `kbs_port=N resource=REPO/TYPE/TAG`. The session key is made here from
//! RDRAND, the report comes from the SNP guest request bound to the
//! server's nonce, the requests travel over virtio-vsock to the host (whose
//! hybrid vsock connects port N to the socket `<uds>_N`), and the resource
//! is decrypted here; only its SHA-256 is printed. The protocol steps are
//! the shared `umbra-kbs-client` library's, as in umbra-agent.

use crate::vsock::{
    Vsock, OP_CREDIT_REQUEST, OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW, OP_SHUTDOWN, RX_DATA, TX_DATA,
};
use crate::{entropy, heap, io, platform, snp, EXIT_BAD_CMDLINE};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use sha2::{Digest, Sha256};
use umbra_firmware::cmdline::Cmdline;
use umbra_firmware::http;
use umbra_kbs_client::evidence::snp_evidence;
use umbra_kbs_client::flow::{self, exit, Attester, FlowError, Reply, Transport};
use umbra_snp_abi::cert_table;

/// Exit codes: the KBS clients' shared table (umbra-agent's too).
const EXIT_UNREACHABLE: u32 = exit::UNREACHABLE as u32;
const EXIT_PROTOCOL: u32 = exit::PROTOCOL as u32;

/// The largest reply accepted (the attestation token is the largest).
const MAX_REPLY: usize = 256 << 10;
/// First local port; each request takes the next (one per connection).
const FIRST_LOCAL_PORT: u32 = 2000;

/// Why a request could not be carried over vsock.
#[derive(Debug)]
enum TransportError {
    Device,
    NotAccepted,
    Reset,
    TooLarge,
    Http(http::HttpError),
}

impl TransportError {
    fn what(&self) -> &'static str {
        match self {
            TransportError::Device => "virtio-vsock device error or timeout",
            TransportError::NotAccepted => "the host refused the vsock connection",
            TransportError::Reset => "the connection was reset before the reply ended",
            TransportError::TooLarge => "the reply is larger than the firmware accepts",
            TransportError::Http(http::HttpError::Incomplete) => "the reply ended in its headers",
            TransportError::Http(http::HttpError::StatusLine) => {
                "the reply has no HTTP status line"
            }
            TransportError::Http(http::HttpError::Header) => "the reply has a malformed header",
            TransportError::Http(http::HttpError::Length) => "the reply's Content-Length is wrong",
        }
    }
}

struct VsockTransport {
    vsock: Vsock,
    port: u32,
    next_local: u32,
}

impl VsockTransport {
    /// Opens a connection, sends `request`, returns every byte of the
    /// reply up to the host's shutdown.
    fn round_trip(&mut self, request: &[u8]) -> Result<Vec<u8>, TransportError> {
        let local = self.next_local;
        self.next_local += 1;
        let port = self.port;
        let v = &mut self.vsock;
        v.new_connection(local, port);
        let dev = |_| TransportError::Device;
        v.send(local, port, OP_REQUEST, &[]).map_err(dev)?;
        let mut data = [0u8; RX_DATA as usize];
        let mut credit = None;
        while credit.is_none() {
            let h = v.receive(&mut data).map_err(dev)?;
            if h.dst_port != local {
                continue;
            }
            match h.op {
                OP_RESPONSE => credit = Some((h.buf_alloc, h.fwd_cnt)),
                OP_RST => return Err(TransportError::NotAccepted),
                _ => {}
            }
        }
        let (mut peer_alloc, mut peer_fwd) = credit.unwrap_or_default();
        let mut sent = 0u32;
        let mut reply = Vec::new();
        let mut chunks = request.chunks(TX_DATA);
        let mut pending = chunks.next();
        loop {
            // Send what the host has room for (virtio 1.2 §5.10.6.3): a
            // part of a chunk when that is all, a credit request when
            // there is none.
            while let Some(chunk) = pending {
                let in_flight = sent.wrapping_sub(peer_fwd);
                let room = peer_alloc.saturating_sub(in_flight) as usize;
                if room == 0 {
                    v.send(local, port, OP_CREDIT_REQUEST, &[]).map_err(dev)?;
                    break;
                }
                let n = chunk.len().min(room);
                v.send(local, port, OP_RW, &chunk[..n]).map_err(dev)?;
                sent = sent.wrapping_add(n as u32);
                pending = if n == chunk.len() {
                    chunks.next()
                } else {
                    Some(&chunk[n..])
                };
            }
            let h = v.receive(&mut data).map_err(dev)?;
            if h.dst_port != local || h.src_port != port {
                continue;
            }
            (peer_alloc, peer_fwd) = (h.buf_alloc, h.fwd_cnt);
            match h.op {
                OP_RW => {
                    let n = (h.len as usize).min(data.len());
                    if reply.len() + n > MAX_REPLY {
                        let _ = v.send(local, port, OP_RST, &[]);
                        return Err(TransportError::TooLarge);
                    }
                    reply.extend_from_slice(&data[..n]);
                }
                OP_SHUTDOWN if pending.is_none() => break,
                OP_SHUTDOWN | OP_RST => {
                    let _ = v.send(local, port, OP_RST, &[]);
                    return Err(TransportError::Reset);
                }
                _ => {}
            }
        }
        v.send(local, port, OP_RST, &[]).map_err(dev)?;
        Ok(reply)
    }
}

impl Transport for VsockTransport {
    type Error = TransportError;

    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        body: &[u8],
    ) -> Result<Reply, TransportError> {
        let cookie =
            cookie.map_or_else(String::new, |c| format!("Cookie: {}={c}\r\n", flow::COOKIE));
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: kbs\r\nContent-Type: application/json\r\n\
             {cookie}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        let bytes = self.round_trip(&request)?;
        let reply = http::parse_reply(&bytes).map_err(TransportError::Http)?;
        Ok(Reply {
            status: reply.status,
            set_cookie: reply.set_cookie.map(String::from),
            body: reply.body.to_vec(),
        })
    }
}

/// Evidence from the SNP extended guest request: the report and the
/// certificates the host supplies with it (none is fine: then the relying
/// party must hold the VCEK, as Trustee's offline store does).
struct GuestRequest;

impl Attester for GuestRequest {
    type Error = &'static str;

    fn evidence(&mut self, report_data: &[u8; 64]) -> Result<serde_json::Value, &'static str> {
        let report = snp::request_report(report_data, snp::ReportKind::WithCertificates)
            .map_err(|e| e.what)?;
        let table = snp::certificate_table();
        let certs = cert_table::entries(&table)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| "the host's certificate table is malformed")?;
        io::print("kbs: report bound to the KBS nonce obtained, with ");
        io::print_dec(certs.len() as u64);
        io::print(" certificates from the host\n");
        snp_evidence(&report, &certs).map_err(|_| "the report has no evidence form")
    }
}

fn fail(code: u32, what: &str) -> u32 {
    io::print("kbs: ");
    io::print(what);
    io::print(": fail\n");
    code
}

/// Runs the scenario.
pub fn kbs(cmdline: &Cmdline) -> u32 {
    if !platform::current().is_snp() {
        io::print("kbs: this scenario needs an SNP platform (--platform snp-model)\n");
        return EXIT_BAD_CMDLINE;
    }
    let Some(port) = cmdline
        .number("kbs_port")
        .and_then(|p| u32::try_from(p).ok())
    else {
        io::print("kbs: kbs_port=N (the host vsock port of the KBS) is required\n");
        return EXIT_BAD_CMDLINE;
    };
    let resource = cmdline.get("resource").unwrap_or("");
    if !flow::resource_ok(resource) {
        io::print("kbs: resource=REPO/TYPE/TAG is required\n");
        return EXIT_BAD_CMDLINE;
    }
    if let Err(e) = heap::init() {
        io::print("kbs: PVALIDATE of heap page ");
        io::print_hex(e.gpa);
        io::print(" failed with ");
        io::print_dec(u64::from(e.code));
        io::print("\n");
        return fail(EXIT_PROTOCOL, "cannot validate the heap");
    }
    let Some(seed) = entropy::random32() else {
        return fail(
            EXIT_PROTOCOL,
            "no RDRAND: no key can be made inside the guest",
        );
    };
    let vsock = match Vsock::open() {
        Ok(v) => v,
        Err(_) => return fail(EXIT_UNREACHABLE, "no virtio-vsock device"),
    };
    let mut transport = VsockTransport {
        vsock,
        port,
        next_local: FIRST_LOCAL_PORT,
    };
    io::print("kbs: ephemeral P-256 key made inside the guest; connecting to vsock port ");
    io::print_dec(u64::from(port));
    io::print("\n");
    let fetch = flow::Fetch {
        seed: &seed,
        resource,
        init_data: None,
    };
    match flow::fetch_resource(&mut transport, &mut GuestRequest, fetch) {
        Ok(secret) => {
            let digest = Sha256::digest(&secret);
            io::print("kbs: secret sha256 ");
            io::print_hex_bytes(&digest);
            io::print("\n");
            0
        }
        Err(error) => {
            let code = u32::from(error.exit_code());
            let line = match error {
                FlowError::Transport(e) => String::from(e.what()),
                FlowError::Attester(what) => String::from(what),
                FlowError::Refused {
                    step,
                    status,
                    kind,
                    detail,
                } => format!(
                    "the KBS refused {} ({status} {kind}): {detail}",
                    step.name()
                ),
                FlowError::NoCookie => String::from("the KBS set no session cookie"),
                FlowError::Protocol(e) => format!("{e}"),
            };
            fail(code, &line)
        }
    }
}
