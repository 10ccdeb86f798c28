//! The control API on a running VM: instance info, machine config, pause
//! and resume, live metrics (with private/shared page counts on the SNP
//! model), FlushMetrics, Firecracker's errors, Shutdown; and `umbra stat`.

#![allow(clippy::unwrap_used)]

mod common;

use common::{kvm_available, scratch};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use umbra_attestation::http::{read_message, write_message};

fn call(socket: &Path, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    write_message(
        &mut s,
        &format!("{method} {path} HTTP/1.1"),
        &[("Host", "localhost")],
        body.as_bytes(),
    )
    .unwrap();
    let reply = read_message(&mut s).unwrap();
    let status = reply
        .start
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let json = if reply.body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&reply.body).unwrap()
    };
    (status, json)
}

fn start(platform: &str, dir: &Path) -> (std::process::Child, std::path::PathBuf) {
    start_with(platform, dir, &[])
}

fn start_with(
    platform: &str,
    dir: &Path,
    extra: &[&str],
) -> (std::process::Child, std::path::PathBuf) {
    let socket = dir.join("api.sock");
    let keys = common::model_keys();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_umbra"));
    cmd.args([
        "run",
        "--platform",
        platform,
        "--vcpus",
        "2",
        "--rng",
        "--timeout",
        "60",
    ])
    .args(["--cmdline", "scenario=serial-echo", "--api-socket"])
    .arg(&socket)
    .arg("--metrics-json")
    .arg(dir.join("m.json"))
    .args(extra);
    if platform == "snp-model" {
        cmd.arg("--model-keys").arg(&keys);
    }
    let child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..400 {
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    (child, socket)
}

#[test]
fn the_api_controls_and_reports_a_running_vm() {
    if !kvm_available() {
        return;
    }
    for platform in ["none", "snp-model"] {
        let dir = scratch(&format!("api-{platform}"));
        let (child, socket) = start(platform, &dir);
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the socket is the owner's alone");
        let (status, info) = call(&socket, "GET", "/", "");
        assert_eq!((status, info["state"].as_str()), (200, Some("Running")));
        assert_eq!(info["app_name"], "umbra");
        let (_, machine) = call(&socket, "GET", "/machine-config", "");
        assert_eq!(
            (
                machine["vcpu_count"].as_u64(),
                machine["mem_size_mib"].as_u64()
            ),
            (Some(2), Some(128))
        );
        // Pause returns once both vCPUs have stopped; resume restarts them.
        assert_eq!(
            call(&socket, "PATCH", "/vm", r#"{"state":"Paused"}"#).0,
            204
        );
        assert_eq!(call(&socket, "GET", "/", "").1["state"], "Paused");
        assert_eq!(
            call(&socket, "PATCH", "/vm", r#"{"state":"Resumed"}"#).0,
            204
        );
        assert_eq!(call(&socket, "GET", "/", "").1["state"], "Running");
        let (_, metrics) = call(&socket, "GET", "/metrics", "");
        assert!(
            metrics["memory"]["rss_bytes"].as_u64().unwrap() > 1 << 20,
            "{metrics}"
        );
        assert_eq!(metrics["devices"][0]["kind"], "virtio-rng");
        if platform == "snp-model" {
            assert!(
                metrics["pages"]["private_pages"].as_u64().unwrap() > 0,
                "{metrics}"
            );
            assert!(
                metrics["pages"]["shared_pages"].as_u64().unwrap() > 0,
                "{metrics}"
            );
        } else {
            assert!(metrics["pages"].is_null());
        }
        // umbra stat reads the same view.
        let stat = Command::new(env!("CARGO_BIN_EXE_umbra"))
            .args([
                "stat",
                "--json",
                "--count",
                "2",
                "--interval",
                "0.1",
                "--api-socket",
            ])
            .arg(&socket)
            .output()
            .unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&stat.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["state"], "Running");
        // Firecracker's errors.
        let (status, err) = call(&socket, "PATCH", "/vm", r#"{"state":"Sleeping"}"#);
        assert_eq!(status, 400);
        assert!(err["fault_message"].as_str().unwrap().contains("Paused"));
        assert_eq!(call(&socket, "GET", "/nothing", "").0, 404);
        assert_eq!(call(&socket, "DELETE", "/vm", "").0, 405);
        assert_eq!(call(&socket, "PUT", "/actions", "{not json").0, 400);
        assert_eq!(
            call(
                &socket,
                "PUT",
                "/actions",
                r#"{"action_type":"FlushMetrics"}"#
            )
            .0,
            204
        );
        let flushed: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("m.json")).unwrap()).unwrap();
        assert_eq!(flushed["flushed"], true);
        // Shutdown ends the run with exit code 0 and says why.
        assert_eq!(
            call(&socket, "PUT", "/actions", r#"{"action_type":"Shutdown"}"#).0,
            204
        );
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{platform}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("control API's Shutdown"));
        assert!(!socket.exists(), "the socket is removed at the end");
    }
}

/// schemathesis (PyPI), an implementation no one here wrote, generates
/// requests from docs/api/openapi.yaml and checks every answer against it
/// (through a small TCP-to-Unix-socket forwarder, as schemathesis speaks
/// TCP). PUT /actions is left out: its Shutdown would end the VM under
/// test; the test above covers it.
#[test]
fn the_api_matches_its_openapi_document() {
    if !kvm_available() {
        return;
    }
    let present = Command::new("schemathesis")
        .arg("--version")
        .output()
        .is_ok();
    if !common::peer_available("schemathesis (PyPI)", present) {
        return;
    }
    let dir = scratch("api-schemathesis");
    let (mut child, socket) = start_with("none", &dir, &["--balloon", "size=16M"]);
    let forwarder = r#"
import socket, sys, threading
unix = sys.argv[1]
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(64)
print(srv.getsockname()[1], flush=True)
def pump(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d: break
            b.sendall(d)
    except OSError: pass
    finally:
        try: b.shutdown(socket.SHUT_WR)
        except OSError: pass
while True:
    c, _ = srv.accept()
    u = socket.socket(socket.AF_UNIX); u.connect(unix)
    threading.Thread(target=pump, args=(c, u), daemon=True).start()
    threading.Thread(target=pump, args=(u, c), daemon=True).start()
"#;
    let mut proxy = Command::new("python3")
        .args(["-c", forwarder])
        .arg(&socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(proxy.stdout.take().unwrap()),
        &mut port,
    )
    .unwrap();
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api/openapi.yaml");
    let out = Command::new("schemathesis")
        .arg("run")
        .arg(&schema)
        .args(["--url", &format!("http://127.0.0.1:{}", port.trim())])
        .args([
            "--checks",
            "all",
            "--exclude-path",
            "/actions",
            "--max-time",
            "30",
        ])
        .output()
        .unwrap();
    let _ = proxy.kill();
    let _ = proxy.wait();
    let _ = child.kill();
    let _ = child.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("No issues found"), "{text}");
}
