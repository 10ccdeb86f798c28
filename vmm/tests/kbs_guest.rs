//! Attested secret release inside a guest, end to end on the SNP model, with
//! the real command lines: `umbra-attest serve --unix S_8080 --resources DIR
//! --policy P --trust-root ARK` and `umbra run --platform snp-model --vsock
//! cid=3,socket=S --cmdline 'scenario=kbs kbs_port=8080
//! resource=default/key/1'`. The firmware makes its P-256 key inside the
//! guest (RDRAND), gets a report bound to the server's nonce through the
//! SNP guest request, speaks the KBS protocol over virtio-vsock (hybrid
//! vsock connects port 8080 to `S_8080`), opens the JWE inside the guest
//! and prints the secret's SHA-256. The evidence carries the VCEK, ASK and
//! ARK that the host handed out with the extended guest request. The
//! server releases the secret only for the pinned launch measurement,
//! verifying the model-signed report against the model's ARK.

mod common;

use common::{kvm_available, model_keys, platform_args, predicted, scratch, stderr, stdout};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &[u8] = b"disk key released to an attested guest\n";

/// `umbra-attest`, built beside `umbra` by `cargo test --workspace`.
fn umbra_attest() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_umbra")).with_file_name("umbra-attest");
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build -p umbra-attestation), \
         or run the whole suite with cargo test --workspace",
        path.display()
    );
    path
}

fn sha256_hex(data: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(data)?;
            child.wait_with_output()
        })
        .expect("run sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string()
}

/// A running `umbra-attest serve`, stopped on drop.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Serves `default/key/1` on `socket` to guests measured `pinned`.
fn serve(dir: &Path, socket: &Path, pinned: &str) -> Server {
    let resources = dir.join("resources");
    std::fs::create_dir_all(resources.join("default/key")).expect("resource dir");
    std::fs::write(resources.join("default/key/1"), SECRET).expect("resource");
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!("measurements = [\"{pinned}\"]\n\n[kbs]\nresources = [\"default/key/1\"]\n"),
    )
    .expect("policy");
    let log = dir.join("serve.log");
    let keys = model_keys();
    let child = Command::new(umbra_attest())
        .arg("serve")
        .arg("--unix")
        .arg(socket)
        .arg("--resources")
        .arg(&resources)
        .arg("--policy")
        .arg(&policy)
        .arg("--trust-root")
        .arg(keys.join("ark.pem"))
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn umbra-attest serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "serve did not bind {}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Server { child, log }
}

const CMDLINE: &str = "scenario=kbs kbs_port=8080 resource=default/key/1";

fn run_guest(vsock_base: &Path) -> std::process::Output {
    let vsock = format!("cid=3,socket={}", vsock_base.display());
    run_model(&["--vsock", &vsock, "--cmdline", CMDLINE])
}

/// `umbra run --platform snp-model` (with the shared model keys) and `extra`.
fn run_model(extra: &[&str]) -> std::process::Output {
    let mut args: Vec<String> = vec!["run".into()];
    args.extend(platform_args("snp-model"));
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    common::umbra(&args)
}

#[test]
fn the_guest_gets_the_secret_only_for_the_pinned_measurement() {
    if !kvm_available() {
        return;
    }
    let keys = model_keys().display().to_string();
    let measurement = predicted(&["--model-keys", &keys, "--cmdline", CMDLINE]);

    // The pinned measurement: the secret reaches the guest.
    let dir = scratch("kbs-guest");
    let base = dir.join("v.sock");
    let server = serve(&dir, &dir.join("v.sock_8080"), &measurement);
    let out = run_guest(&base);
    let console = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{console}\n{}\nserve: {}",
        stderr(&out),
        server.log()
    );
    let line = format!("kbs: secret sha256 {}", sha256_hex(SECRET));
    assert!(console.contains(&line), "no '{line}' in:\n{console}");
    assert!(
        console.contains("kbs: ephemeral P-256 key made inside the guest"),
        "{console}"
    );
    assert!(
        console.contains("with 3 certificates from the host"),
        "{console}"
    );
    let log = server.log();
    for event in ["auth", "attest", "resource"] {
        assert!(
            log.contains(&format!("\"event\":\"{event}\",\"path\"")) && log.contains("allow"),
            "serve log lacks an allowed {event}:\n{log}"
        );
    }
    assert!(
        !log.contains(std::str::from_utf8(SECRET).expect("text")),
        "secret logged"
    );
    drop(server);

    // Another pinned measurement: no secret, the attest step refused.
    let dir = scratch("kbs-guest-other");
    let base = dir.join("v.sock");
    let other = "00".repeat(48);
    let server = serve(&dir, &dir.join("v.sock_8080"), &other);
    let out = run_guest(&base);
    let console = stdout(&out);
    assert_eq!(out.status.code(), Some(7), "{console}\n{}", stderr(&out));
    assert!(!console.contains("kbs: secret"), "{console}");
    assert!(
        console.contains("the KBS refused attest (403 PolicyViolation)"),
        "{console}"
    );
    assert!(server.log().contains("PolicyViolation"), "{}", server.log());
}

#[test]
fn the_kbs_scenario_needs_a_port_and_a_resource() {
    if !kvm_available() {
        return;
    }
    for (cmdline, expected) in [
        ("scenario=kbs resource=default/key/1", "kbs_port=N"),
        (
            "scenario=kbs kbs_port=8080 resource=default/../1",
            "resource=REPO/TYPE/TAG",
        ),
    ] {
        let out = run_model(&["--cmdline", cmdline]);
        assert_eq!(out.status.code(), Some(2), "{cmdline}: {}", stdout(&out));
        assert!(
            stdout(&out).contains(expected),
            "{cmdline}: {}",
            stdout(&out)
        );
    }
}
