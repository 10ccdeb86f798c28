//! `umbra-attest serve`: a KBS-protocol relying party (see `kbs::server`).

use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use umbra_attestation::kbs::server::{Kbs, ServeConfig};
use umbra_attestation::policy::PolicyFile;
use umbra_attestation::{chain, verify};

/// Exit code for unusable inputs (a policy, a root, a socket).
const EXIT_SETUP: i32 = 3;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Listen on this Unix socket (e.g. the hybrid-vsock path `S_8080`).
    #[arg(long)]
    unix: Option<PathBuf>,
    /// Listen on this TCP address (e.g. 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<String>,
    /// Resources: DIR/<repo>/<type>/<tag>.
    #[arg(long)]
    resources: PathBuf,
    /// The appraisal policy (TOML, as `verify --policy`), plus a `[kbs]`
    /// table whose `resources = ["repo/type/tag", "repo/*/*"]` lists what
    /// attested guests may fetch.
    #[arg(long)]
    policy: PathBuf,
    /// A trusted root (repeatable), accepted besides AMD's built-in ARKs
    /// (e.g. the SNP model's ARK in `--model-keys DIR`).
    #[arg(long = "trust-root", required = true)]
    trust_root: Vec<PathBuf>,
    /// Certificates for evidence that carries none (vcek, ask, ark as
    /// .der or .pem), like Trustee's offline KDS store.
    #[arg(long)]
    certs: Option<PathBuf>,
    /// TLS on `--listen`: the server's certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS on `--listen`: the server's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// `auth` and `attest` requests admitted a second (more get 429).
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Seconds a nonce stays valid.
    #[arg(long, default_value_t = 300)]
    nonce_lifetime: u64,
    /// Seconds an attested session may fetch resources.
    #[arg(long, default_value_t = 3600)]
    session_lifetime: u64,
}

fn config(a: &ServeArgs) -> Result<ServeConfig, String> {
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let text = String::from_utf8(read(&a.policy)?)
        .map_err(|_| format!("{}: not UTF-8 text", a.policy.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).map_err(|e| format!("{}: {}", a.policy.display(), e.message()))?;
    let allowed = match table.remove("kbs") {
        Some(toml::Value::Table(kbs)) => kbs
            .get("resources")
            .and_then(toml::Value::as_array)
            .and_then(|list| {
                list.iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| {
                format!(
                    "{}: [kbs] resources must be a list of strings",
                    a.policy.display()
                )
            })?,
        Some(_) => return Err(format!("{}: [kbs] must be a table", a.policy.display())),
        None => Vec::new(),
    };
    let rest = toml::to_string(&table).map_err(|e| e.to_string())?;
    let file = PolicyFile::from_toml(&rest)
        .map_err(|e| format!("{}: {}", a.policy.display(), verify::describe(&e)))?;
    let policy = if file.is_empty() {
        None
    } else {
        Some(file.compile().map_err(|e| verify::describe(&e))?)
    };
    let trust_roots = a
        .trust_root
        .iter()
        .map(|p| chain::load_cert(&read(p)?, &p.display().to_string()).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut store = Vec::new();
    if let Some(dir) = &a.certs {
        use umbra_attestation::kbs::evidence::CertKind;
        for (kind, name) in [
            (CertKind::Vcek, "vcek"),
            (CertKind::Ask, "ask"),
            (CertKind::Ark, "ark"),
        ] {
            let found = ["der", "pem"]
                .iter()
                .map(|ext| dir.join(format!("{name}.{ext}")))
                .find(|p| p.is_file());
            if let Some(path) = found {
                let cert = chain::load_cert(&read(&path)?, &path.display().to_string())
                    .map_err(|e| e.to_string())?;
                store.push((kind, cert));
            }
        }
    }
    if !a.resources.is_dir() {
        return Err(format!("{}: not a directory", a.resources.display()));
    }
    Ok(ServeConfig {
        resources: a.resources.clone(),
        allowed,
        policy,
        trust_roots,
        store,
        nonce_lifetime: Duration::from_secs(a.nonce_lifetime),
        session_lifetime: Duration::from_secs(a.session_lifetime),
        requests_per_second: Some(a.rate),
    })
}

pub fn run(a: ServeArgs) -> i32 {
    if a.unix.is_none() && a.listen.is_none() {
        umbra_attestation::errln!("umbra-attest: serve needs --unix PATH or --listen ADDR");
        return 2;
    }
    let kbs = match config(&a).and_then(|c| Kbs::new(c).map_err(|e| e.to_string())) {
        Ok(k) => Arc::new(k),
        Err(e) => {
            umbra_attestation::errln!("umbra-attest: {e}");
            return EXIT_SETUP;
        }
    };
    let mut threads = Vec::new();
    if let Some(path) = &a.unix {
        let _ = std::fs::remove_file(path);
        match std::os::unix::net::UnixListener::bind(path) {
            Ok(listener) => {
                let kbs = kbs.clone();
                threads.push(std::thread::spawn(move || kbs.serve(listener.incoming())));
            }
            Err(e) => {
                umbra_attestation::errln!("umbra-attest: cannot listen on {}: {e}", path.display());
                return EXIT_SETUP;
            }
        }
    }
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => match umbra_attestation::kbs::tls::acceptor(cert, key) {
            Ok(acceptor) => Some(acceptor),
            Err(e) => {
                umbra_attestation::errln!("umbra-attest: {}", verify::describe(&e));
                return EXIT_SETUP;
            }
        },
        _ => None,
    };
    if tls.is_some() && a.listen.is_none() {
        umbra_attestation::errln!("umbra-attest: --tls-cert/--tls-key apply to --listen ADDR");
        return 2;
    }
    if let Some(addr) = &a.listen {
        match std::net::TcpListener::bind(addr) {
            Ok(listener) => {
                let kbs = kbs.clone();
                threads.push(std::thread::spawn(move || match tls {
                    Some(acceptor) => kbs.serve_tls(listener.incoming(), acceptor),
                    None => kbs.serve(listener.incoming()),
                }));
            }
            Err(e) => {
                umbra_attestation::errln!("umbra-attest: cannot listen on {addr}: {e}");
                return EXIT_SETUP;
            }
        }
    }
    umbra_attestation::errln!("umbra-attest: serving the KBS protocol");
    for t in threads {
        let _ = t.join();
    }
    0
}
