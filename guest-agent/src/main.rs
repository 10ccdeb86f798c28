//! `umbra-agent`: obtain an SEV-SNP attestation report inside the guest and,
//! optionally, check it against AMD's roots before sending it on.

mod peer_cli;
mod secret_cli;

use secret_cli::{derive_key, fetch_secret, FetchArgs};

use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use umbra_attestation::hex;
use umbra_attestation::verify::Status;
use umbra_guest_agent::cert_table;
use umbra_guest_agent::sev_guest;
use umbra_guest_agent::source::{Choice, Deferred, Source};
use umbra_guest_agent::tsm::{Evidence, DEFAULT_TSM_ROOT};
use umbra_guest_agent::verify::verify_with_table;

/// Obtain SEV-SNP attestation evidence from inside a guest.
#[derive(Parser, Debug)]
#[command(name = "umbra-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where reports come from.
#[derive(clap::Args, Debug)]
struct SourceArgs {
    /// The configfs-tsm report directory.
    #[arg(long, default_value = DEFAULT_TSM_ROOT)]
    tsm_root: PathBuf,
    /// The SNP guest driver's device node.
    #[arg(long, default_value = sev_guest::DEFAULT_DEVICE)]
    sev_guest: PathBuf,
    /// auto: configfs-tsm when its directory exists, else /dev/sev-guest.
    #[arg(long, value_enum, default_value = "auto")]
    provider: ProviderArg,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ProviderArg {
    Auto,
    ConfigfsTsm,
    SevGuest,
}

impl SourceArgs {
    fn deferred(&self) -> Deferred {
        Deferred {
            choice: match self.provider {
                ProviderArg::Auto => Choice::Auto,
                ProviderArg::ConfigfsTsm => Choice::ConfigfsTsm,
                ProviderArg::SevGuest => Choice::SevGuest,
            },
            tsm_root: self.tsm_root.clone(),
            device: self.sev_guest.clone(),
        }
    }

    fn pick(&self) -> Result<Source, umbra_guest_agent::source::SourceError> {
        let d = self.deferred();
        Source::pick(d.choice, &d.tsm_root, &d.device)
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum RootKeyArg {
    Vcek,
    Vmrk,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum FieldArg {
    Policy,
    ImageId,
    FamilyId,
    Measurement,
    GuestSvn,
    TcbVersion,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Request a report through configfs-tsm and write it (and any certificates) out.
    Report {
        /// REPORT_DATA as hex (up to 64 bytes), e.g. a verifier's nonce.
        #[arg(long, default_value = "")]
        report_data: String,
        /// VMPL to request the report at.
        #[arg(long)]
        vmpl: Option<u32>,
        /// Where to write the report.
        #[arg(long, default_value = "report.bin")]
        out: PathBuf,
        /// Where to write the raw certificate table from the host, if any.
        #[arg(long)]
        certs_out: Option<PathBuf>,
        /// Write the host's certificates as ark.der/ask.der/vcek.der/... here
        /// (the layout `umbra-attest verify --certs DIR` reads).
        #[arg(long)]
        certs_dir: Option<PathBuf>,
        /// Check the report with the host's certificates against AMD's
        /// pinned roots; exit 1 if any check fails.
        #[arg(long)]
        verify: bool,
        #[command(flatten)]
        source: SourceArgs,
        /// Name of the report entry (created if missing).
        #[arg(long, default_value = "umbra-agent")]
        entry: String,
    },
    /// Write this guest's evidence in Trustee's form (what a KBS or a peer
    /// reads), bound to REPORT_DATA (e.g. a peer's nonce).
    Evidence {
        /// REPORT_DATA as hex (up to 64 bytes).
        #[arg(long)]
        report_data: String,
        /// Where the evidence JSON goes.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        source: SourceArgs,
    },
    /// Check a peer guest's evidence (Trustee's form) before trusting it:
    /// chain, signature, chip, TCB, then the policy.
    Verify {
        /// The peer's evidence JSON.
        #[arg(long)]
        evidence: PathBuf,
        /// The REPORT_DATA the peer must have bound (the nonce given to it),
        /// hex: without it, replayed evidence would pass.
        #[arg(long)]
        report_data: String,
        /// An appraisal policy (the TOML of `umbra-attest verify --policy`).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// A root accepted besides AMD's (repeatable).
        #[arg(long = "trust-root")]
        trust_root: Vec<PathBuf>,
    },
    /// Derive a sealing key bound to this guest (SNP_GET_DERIVED_KEY through
    /// /dev/sev-guest; configfs-tsm has no such interface).
    DeriveKey {
        /// The root the key derives from.
        #[arg(long, value_enum, default_value = "vcek")]
        root_key: RootKeyArg,
        /// Guest fields mixed in (comma-separated).
        #[arg(long, value_enum, value_delimiter = ',')]
        fields: Vec<FieldArg>,
        /// VMPL the key is bound to (at least the caller's).
        #[arg(long, default_value_t = 0)]
        vmpl: u32,
        /// Guest SVN to bind (at most the current one).
        #[arg(long, default_value_t = 0)]
        guest_svn: u32,
        /// TCB version to bind, hex (at most the current one).
        #[arg(long, default_value = "0")]
        tcb_version: String,
        /// Where the 32-byte key goes (mode 0600; tmpfs unless --allow-persistent).
        #[arg(long)]
        out: PathBuf,
        /// Allow writing the key to a persistent filesystem.
        #[arg(long)]
        allow_persistent: bool,
        /// The SNP guest driver's device node.
        #[arg(long, default_value = sev_guest::DEFAULT_DEVICE)]
        sev_guest: PathBuf,
    },
    /// Attest to a KBS (Trustee's protocol) and fetch a secret.
    FetchSecret {
        /// The KBS: `http://HOST:PORT`, `https://HOST:PORT` or `unix:PATH`.
        #[arg(long)]
        kbs: String,
        /// Trust anchors (PEM) for an `https://` KBS; default the system's.
        #[arg(long)]
        kbs_ca: Option<PathBuf>,
        /// The resource: REPO/TYPE/TAG.
        #[arg(long)]
        resource: String,
        /// Where the secret goes (mode 0600; tmpfs unless --allow-persistent).
        #[arg(long)]
        out: PathBuf,
        /// Allow writing the secret to a persistent filesystem.
        #[arg(long)]
        allow_persistent: bool,
        #[command(flatten)]
        source: SourceArgs,
        /// An initdata TOML document (Trustee's `version`, `algorithm`,
        /// `[data]`) to send as `init-data`; the KBS checks its digest
        /// against the report's HOST_DATA.
        #[arg(long)]
        init_data: Option<PathBuf>,
    },
}

/// Prints one error line with its causes and exits with `code`.
fn fail(err: &(dyn std::error::Error + 'static), code: i32) -> ! {
    let text = umbra_attestation::verify::describe(err);
    umbra_attestation::errln!("umbra-agent: {text}");
    std::process::exit(code)
}

fn write(path: &Path, bytes: &[u8]) {
    if let Err(err) = std::fs::write(path, bytes) {
        umbra_attestation::errln!("umbra-agent: cannot write {}: {err}", path.display());
        std::process::exit(1);
    }
}

fn write_certs_dir(dir: &Path, evidence: &Evidence) {
    let entries = match cert_table::parse(&evidence.certificates) {
        Ok(entries) => entries,
        Err(err) => fail(&err, 1),
    };
    if let Err(err) = std::fs::create_dir_all(dir) {
        umbra_attestation::errln!("umbra-agent: cannot create {}: {err}", dir.display());
        std::process::exit(1);
    }
    for (kind, bytes) in entries {
        if let Some(name) = cert_table::file_name(kind) {
            write(&dir.join(name), bytes);
        }
    }
}

fn main() {
    let (report_data, vmpl, out, certs_out, certs_dir, verify, source, entry) = match Cli::parse()
        .command
    {
        Command::FetchSecret {
            kbs,
            kbs_ca,
            resource,
            out,
            allow_persistent,
            source,
            init_data,
        } => std::process::exit(fetch_secret(FetchArgs {
            kbs: &kbs,
            kbs_ca: kbs_ca.as_deref(),
            resource: &resource,
            out: &out,
            allow_persistent,
            source: &source,
            init_data: init_data.as_deref(),
        })),
        Command::DeriveKey {
            root_key,
            fields,
            vmpl,
            guest_svn,
            tcb_version,
            out,
            allow_persistent,
            sev_guest,
        } => {
            use sev_guest::{KeyRequest, RootKey};
            let tcb_version = match u64::from_str_radix(tcb_version.trim_start_matches("0x"), 16) {
                Ok(v) => v,
                Err(e) => {
                    umbra_attestation::errln!("umbra-agent: --tcb-version {tcb_version}: {e}");
                    std::process::exit(2);
                }
            };
            let request = KeyRequest {
                root: match root_key {
                    RootKeyArg::Vcek => RootKey::Vcek,
                    RootKeyArg::Vmrk => RootKey::Vmrk,
                },
                fields: fields.iter().fold(0, |bits, f| {
                    bits | match f {
                        FieldArg::Policy => sev_guest::FIELD_GUEST_POLICY,
                        FieldArg::ImageId => sev_guest::FIELD_IMAGE_ID,
                        FieldArg::FamilyId => sev_guest::FIELD_FAMILY_ID,
                        FieldArg::Measurement => sev_guest::FIELD_MEASUREMENT,
                        FieldArg::GuestSvn => sev_guest::FIELD_GUEST_SVN,
                        FieldArg::TcbVersion => sev_guest::FIELD_TCB_VERSION,
                    }
                }),
                vmpl,
                guest_svn,
                tcb_version,
            };
            std::process::exit(derive_key(&request, &out, allow_persistent, &sev_guest))
        }
        Command::Evidence {
            report_data,
            out,
            source,
        } => std::process::exit(peer_cli::write_evidence(
            &report_data,
            &out,
            &source.deferred(),
        )),
        Command::Verify {
            evidence,
            report_data,
            policy,
            trust_root,
        } => std::process::exit(peer_cli::verify(
            &evidence,
            &report_data,
            policy.as_deref(),
            &trust_root,
        )),
        Command::Report {
            report_data,
            vmpl,
            out,
            certs_out,
            certs_dir,
            verify,
            source,
            entry,
        } => (
            report_data,
            vmpl,
            out,
            certs_out,
            certs_dir,
            verify,
            source,
            entry,
        ),
    };
    let data = match peer_cli::report_data(&report_data) {
        Ok(data) => data,
        Err(err) => {
            umbra_attestation::errln!("umbra-agent: {err}");
            std::process::exit(2);
        }
    };
    let source = match source.pick() {
        Ok(source) => source,
        Err(err) => fail(&err, 1),
    };
    let evidence = match source.get_report(&data, vmpl, &entry) {
        Ok(evidence) => evidence,
        Err(err) => fail(&err, 1),
    };
    write(&out, &evidence.report);
    if let Some(path) = &certs_out {
        write(path, &evidence.certificates);
    }
    if let Some(dir) = &certs_dir {
        write_certs_dir(dir, &evidence);
    }
    let provider = if evidence.provider.is_empty() {
        "the SNP guest driver"
    } else {
        &evidence.provider
    };
    umbra_attestation::outln!(
        "report v{} from {provider} through {} written to {} (measurement {})",
        evidence.parsed.version,
        source.describe(),
        out.display(),
        hex::encode(&evidence.parsed.measurement)
    );
    if verify {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let checks = match verify_with_table(&evidence.parsed, &evidence.certificates, now) {
            Ok(checks) => checks,
            Err(err) => fail(&err, 1),
        };
        for c in &checks {
            umbra_attestation::outln!("{}", c.line());
        }
        if checks.iter().any(|c| c.status == Status::Fail) {
            std::process::exit(1);
        }
    }
}
