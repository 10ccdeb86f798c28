//! `umbra stat --api-socket PATH [--interval S] [--json] [--count N]`: the
//! live view of one VM from its control API's `GET /metrics`, what
//! virt-top and numastat show for it: one JSON line per interval (with
//! `--json` or when stdout is not a terminal), or one line updated in
//! place on a terminal. Ends when the VM does.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;
use umbra_attestation::http::{read_message, write_message};

fn sample(socket: &Path) -> Result<serde_json::Value, String> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("cannot reach the API at {}: {e}", socket.display()))?;
    write_message(
        &mut stream,
        "GET /metrics HTTP/1.1",
        &[("Host", "localhost")],
        &[],
    )
    .map_err(|e| e.to_string())?;
    let reply = read_message(&mut stream).map_err(|e| e.to_string())?;
    serde_json::from_slice(&reply.body).map_err(|e| format!("the API answered no JSON: {e}"))
}

fn mib(v: &serde_json::Value) -> String {
    v.as_u64().map_or_else(
        || "-".into(),
        |b| format!("{:.1}", b as f64 / (1 << 20) as f64),
    )
}

fn line(m: &serde_json::Value) -> String {
    let mem = &m["memory"];
    let pages = match m["pages"].as_object() {
        Some(p) => format!(
            " private {} shared {} conversions {}",
            p.get("private_pages").and_then(|v| v.as_u64()).unwrap_or(0),
            p.get("shared_pages").and_then(|v| v.as_u64()).unwrap_or(0),
            p.get("conversions_to_private")
                .and_then(|v| v.as_u64())
                .unwrap_or(0)
                + p.get("conversions_to_shared")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0),
        ),
        None => String::new(),
    };
    let devices: Vec<String> = m["devices"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|d| format!("{} {}req", d["name"].as_str().unwrap_or("?"), d["requests"]))
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{} rss {} MiB (anon {}, thp {}) violations {}{} {}",
        m["state"].as_str().unwrap_or("?"),
        mib(&mem["rss_bytes"]),
        mib(&mem["anon_bytes"]),
        mib(&mem["anon_huge_bytes"]),
        m["violations"],
        pages,
        devices.join(" ")
    )
}

/// Runs the command; returns the exit code.
pub fn run(socket: &Path, interval: f64, json: bool, count: Option<u32>) -> i32 {
    if !interval.is_finite() || interval <= 0.0 {
        umbra_attestation::errln!(
            "umbra: --interval {interval} must be a positive number of seconds"
        );
        return 2;
    }
    let terminal = std::io::stdout().is_terminal() && !json;
    let mut taken = 0u32;
    loop {
        match sample(socket) {
            Ok(m) if terminal => {
                umbra_attestation::console::out_text(&format!("\r\x1b[K{}", line(&m)));
            }
            Ok(m) => {
                umbra_attestation::outln!("{m}");
            }
            // The VM ended (its socket went away) after we saw it run.
            Err(_) if taken > 0 => break,
            Err(e) => {
                umbra_attestation::errln!("umbra: {e}");
                return 1;
            }
        }
        taken += 1;
        if count.is_some_and(|n| taken >= n) {
            break;
        }
        std::thread::sleep(Duration::from_secs_f64(interval));
    }
    if terminal {
        umbra_attestation::outln!("");
    }
    0
}
