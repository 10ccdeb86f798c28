//! `umbra-agent fetch-secret`'s own front end: usage errors exit 2, a
//! secret is refused on a persistent filesystem unless asked, an
//! unreachable KBS exits 3 (the exchange itself is tested end to end in
//! tests/tests/kbs.rs through the same library function).

#![allow(clippy::unwrap_used)]

use std::process::Command;

fn agent(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_umbra-agent"))
        .arg("fetch-secret")
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn usage_errors_and_an_unreachable_kbs() {
    let tmp = if std::path::Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    let out_path = format!("{tmp}/umbra-agent-cli-{}", std::process::id());
    let out = agent(&[
        "--kbs",
        "ftp://x",
        "--resource",
        "a/b/c",
        "--out",
        &out_path,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = agent(&[
        "--kbs",
        "http://127.0.0.1:1",
        "--resource",
        "a/b",
        "--out",
        &out_path,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // The target directory of the build is on a persistent filesystem.
    let persistent = std::env::current_dir().unwrap().join("secret.out");
    let out = agent(&[
        "--kbs",
        "http://127.0.0.1:1",
        "--resource",
        "a/b/c",
        "--out",
        persistent.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("persistent filesystem"),
        "{}",
        stderr(&out)
    );
    assert!(!persistent.exists());
    // An init-data file that cannot be read.
    let out = agent(&[
        "--kbs",
        "http://127.0.0.1:1",
        "--resource",
        "a/b/c",
        "--out",
        &out_path,
        "--init-data",
        "/nonexistent/initdata.toml",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--init-data /nonexistent/initdata.toml"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    // Nothing listens on port 1, and nothing answers on a missing socket.
    let out = agent(&[
        "--kbs",
        "unix:/nonexistent/kbs.sock",
        "--resource",
        "a/b/c",
        "--out",
        &out_path,
        "--allow-persistent",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot reach the KBS"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn derive_key_and_the_report_source_are_checked() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_umbra-agent"))
            .args(args)
            .output()
            .unwrap()
    };
    let out_path = format!("/dev/shm/umbra-agent-key-{}", std::process::id());
    let out = run(&["derive-key", "--tcb-version", "zz", "--out", &out_path]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--tcb-version zz"),
        "{}",
        stderr(&out)
    );
    let out = run(&[
        "derive-key",
        "--fields",
        "measurement,policy",
        "--sev-guest",
        "/nonexistent/sev-guest",
        "--out",
        &out_path,
        "--allow-persistent",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot open /nonexistent/sev-guest"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    // Neither interface: one line naming both.
    let out = run(&[
        "report",
        "--tsm-root",
        "/nonexistent/tsm",
        "--sev-guest",
        "/nonexistent/sev-guest",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("neither configfs-tsm (/nonexistent/tsm) nor /nonexistent/sev-guest"),
        "{}",
        stderr(&out)
    );
}
