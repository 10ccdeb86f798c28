//! The control API (`--api-socket PATH`): HTTP/1.1 on a Unix socket
//! created 0600, following Firecracker's API where it has an equivalent
//! (docs/api/openapi.yaml):
//!
//! - `GET /`: instance info (`id`, `state`, `vmm_version`, `app_name`);
//! - `GET /machine-config`: vCPUs, memory, backing;
//! - `PATCH /vm` `{"state": "Paused" | "Resumed"}`;
//! - `PUT /actions` `{"action_type": "FlushMetrics" | "Shutdown"}`;
//! - `GET /metrics`: umbra's live view (RSS and its parts from
//!   smaps_rollup, vCPU and device counters, violations, private/shared
//!   pages).
//!
//! Errors are Firecracker's `{"fault_message": "..."}`. Requests are
//! bounded (16 KiB of headers, 64 KiB of body) and served one at a time
//! by the API thread, which runs under its own seccomp filter.

use crate::metrics::DeviceMetrics;
use crate::run_control::{RunControl, StopReason};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use thiserror::Error;
use umbra_attestation::http::{read_message, write_message, Message};

/// Largest request body the API reads.
const MAX_BODY: usize = 64 << 10;

/// Why the API could not start.
#[derive(Debug, Error)]
pub enum ApiError {
    /// The socket could not be created.
    #[error("cannot create the API socket {path}")]
    Bind {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What the API reads from the running VM.
pub(crate) struct ApiView {
    /// Stop, pause and resume.
    pub(crate) control: Arc<RunControl>,
    /// `GET /machine-config`.
    pub(crate) machine: Value,
    /// Device counters, read on every `GET /metrics`.
    pub(crate) devices: Box<dyn Fn() -> Vec<DeviceMetrics> + Send>,
    /// Private/shared page counts (confidential guests), likewise.
    pub(crate) pages: Box<dyn Fn() -> Option<Value> + Send>,
    /// Violations so far.
    pub(crate) violations: Box<dyn Fn() -> u64 + Send>,
    /// Exits per vCPU so far.
    pub(crate) vcpu_exits: Box<dyn Fn() -> Vec<u64> + Send>,
    /// Asked to write `--metrics-json` now.
    pub(crate) flush_metrics: Box<dyn Fn() -> Result<(), String> + Send>,
    /// The seccomp mode for the API thread.
    pub(crate) seccomp: crate::seccomp::SeccompMode,
    /// The balloon, if the VM has one.
    pub(crate) balloon: Option<(
        Arc<crate::virtio::balloon::BalloonState>,
        crate::device_manager::SharedTransport,
    )>,
}

/// The running API server; the thread ends with the process (it blocks in
/// `accept`) or when the socket is removed.
pub(crate) struct ApiServer {
    path: PathBuf,
    _thread: JoinHandle<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// RSS and its parts from `/proc/self/smaps_rollup`, in bytes.
fn memory() -> Value {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    let kib = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|v| v * 1024)
    };
    json!({
        "rss_bytes": kib("Rss:"),
        "anon_bytes": kib("Anonymous:"),
        "anon_huge_bytes": kib("AnonHugePages:"),
        "shmem_huge_bytes": kib("ShmemPmdMapped:"),
        "file_bytes": kib("Private_Clean:").zip(kib("Shared_Clean:")).map(|(a, b)| a + b),
        "swap_bytes": kib("Swap:"),
        "hugetlb_bytes": kib("Private_Hugetlb:").zip(kib("Shared_Hugetlb:")).map(|(a, b)| a + b),
    })
}

fn fault(status: u16, message: impl Into<String>) -> (u16, Vec<u8>) {
    let body = json!({ "fault_message": message.into() }).to_string();
    (status, body.into_bytes())
}

fn ok(value: Value) -> (u16, Vec<u8>) {
    (200, value.to_string().into_bytes())
}

fn body_json(request: &Message) -> Result<Value, (u16, Vec<u8>)> {
    if request.body.len() > MAX_BODY {
        return Err(fault(400, "request body too large"));
    }
    serde_json::from_slice(&request.body).map_err(|e| fault(400, format!("invalid JSON body: {e}")))
}

impl ApiView {
    fn state(&self) -> &'static str {
        if self.control.is_stopping() {
            "Stopped"
        } else if self.control.is_paused() {
            "Paused"
        } else {
            "Running"
        }
    }

    fn handle(&self, request: &Message) -> (u16, Vec<u8>) {
        let mut parts = request.start.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        match (method, path) {
            ("GET", "/") => ok(json!({
                "id": "umbra",
                "state": self.state(),
                "vmm_version": env!("CARGO_PKG_VERSION"),
                "app_name": "umbra",
            })),
            ("GET", "/machine-config") => ok(self.machine.clone()),
            ("GET", "/metrics") => ok(json!({
                "state": self.state(),
                "memory": memory(),
                "numa_pages": crate::numa::pages_per_node(),
                "violations": (self.violations)(),
                "vcpu_exits": (self.vcpu_exits)(),
                "pages": (self.pages)(),
                "devices": (self.devices)(),
                "balloon": self.balloon.as_ref().map(|(b, _)| b.metrics()),
            })),
            ("GET", "/balloon") => match &self.balloon {
                Some((state, _)) => {
                    let m = state.metrics();
                    ok(json!({
                        "amount_mib": m.target_mib,
                        "actual_mib": m.actual_mib,
                        "reclaimed_bytes": m.reclaimed_bytes,
                        "refused_private_pages": m.refused_private_pages,
                    }))
                }
                None => fault(404, "the VM has no balloon (--balloon size=SIZE)"),
            },
            ("PATCH", "/balloon") => {
                let Some((state, transport)) = &self.balloon else {
                    return fault(404, "the VM has no balloon (--balloon size=SIZE)");
                };
                let body = match body_json(request) {
                    Ok(b) => b,
                    Err(e) => return e,
                };
                let Some(mib) = body
                    .get("amount_mib")
                    .and_then(Value::as_u64)
                    .filter(|&m| m <= u64::from(u32::MAX))
                else {
                    return fault(400, "amount_mib must be a number of MiB below 2^32");
                };
                // A balloon cannot hold more than the guest has.
                let mib = mib.min(self.machine["mem_size_mib"].as_u64().unwrap_or(0));
                state.set_target(mib << 20);
                crate::sync::lock(transport).config_changed();
                (204, Vec::new())
            }
            ("PATCH", "/vm") => {
                let body = match body_json(request) {
                    Ok(b) => b,
                    Err(e) => return e,
                };
                let pause = match body.get("state").and_then(Value::as_str) {
                    Some("Paused") => true,
                    Some("Resumed") => false,
                    _ => return fault(400, "state must be \"Paused\" or \"Resumed\""),
                };
                if self.control.is_stopping() {
                    return fault(400, "the VM is stopping");
                }
                if self.control.set_paused(pause) {
                    (204, Vec::new())
                } else {
                    fault(500, "the vCPUs did not pause in time")
                }
            }
            ("PUT", "/actions") => {
                let body = match body_json(request) {
                    Ok(b) => b,
                    Err(e) => return e,
                };
                match body.get("action_type").and_then(Value::as_str) {
                    Some("Shutdown") => {
                        self.control.request_stop(StopReason::ApiShutdown);
                        (204, Vec::new())
                    }
                    Some("FlushMetrics") => match (self.flush_metrics)() {
                        Ok(()) => (204, Vec::new()),
                        Err(e) => fault(400, e),
                    },
                    Some("SendCtrlAltDel") => fault(
                        400,
                        "SendCtrlAltDel needs an i8042 keyboard controller, which umbra's machine does not have",
                    ),
                    _ => fault(400, "action_type must be FlushMetrics, SendCtrlAltDel or Shutdown"),
                }
            }
            (_, "/" | "/machine-config" | "/metrics" | "/vm" | "/actions" | "/balloon") => fault(
                405,
                format!("{method} is not allowed on {path} (only {})", allowed(path)),
            ),
            _ => fault(404, format!("no resource {path}")),
        }
    }
}

/// The one method each resource takes (the `Allow` of a 405).
fn allowed(path: &str) -> &'static str {
    match path {
        "/vm" => "PATCH",
        "/balloon" => "GET, PATCH",
        "/actions" => "PUT",
        _ => "GET",
    }
}

/// Starts the API on `path` (created 0600; an existing socket is
/// replaced).
pub(crate) fn start(path: &Path, view: ApiView) -> Result<ApiServer, ApiError> {
    let bind_error = |source| ApiError::Bind {
        path: path.to_path_buf(),
        source,
    };
    if std::fs::symlink_metadata(path).is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_socket()
    }) {
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(bind_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_error)?;
    let thread = std::thread::Builder::new()
        .name("api".into())
        .spawn(move || {
            if let Err(e) = crate::seccomp::install(crate::seccomp::ThreadKind::Api, view.seccomp) {
                log::error!("API thread: {}", crate::error::error_chain(&e));
                return;
            }
            for stream in listener.incoming().flatten() {
                let mut stream = stream;
                let (status, body, allow) = match read_message(&mut stream) {
                    Ok(request) => {
                        let (status, body) = view.handle(&request);
                        let path = request.start.split_whitespace().nth(1).unwrap_or("");
                        (status, body, (status == 405).then(|| allowed(path)))
                    }
                    Err(e) => {
                        let (status, body) = fault(400, crate::error::error_chain(&e));
                        (status, body, None)
                    }
                };
                let reason = match status {
                    200 => "OK",
                    204 => "No Content",
                    400 => "Bad Request",
                    404 => "Not Found",
                    405 => "Method Not Allowed",
                    _ => "Internal Server Error",
                };
                let mut headers = Vec::new();
                if !body.is_empty() {
                    headers.push(("Content-Type", "application/json"));
                }
                if let Some(allow) = allow {
                    headers.push(("Allow", allow));
                }
                let _ = write_message(
                    &mut stream,
                    &format!("HTTP/1.1 {status} {reason}"),
                    &headers,
                    &body,
                );
            }
        })
        .map_err(bind_error)?;
    Ok(ApiServer {
        path: path.to_path_buf(),
        _thread: thread,
    })
}
