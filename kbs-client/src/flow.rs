//! The whole client exchange — auth, evidence bound to the challenge,
//! attest, resource, decryption — written once over two small traits, so
//! that umbra-agent (HTTP over TCP or a Unix socket, configfs-tsm) and the
//! firmware (HTTP over virtio-vsock, the SNP guest request) run the same
//! steps in the same order.

use crate::{KbsError, KbsSession};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// The session cookie Trustee's KBS sets (`kbs/src/http/mod.rs`).
pub const COOKIE: &str = "kbs-session-id";

/// One HTTP reply, as much of it as the protocol needs.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The value of the `Set-Cookie` header, if any.
    pub set_cookie: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

/// Carries one request to the KBS and brings back its reply.
pub trait Transport {
    /// Why a request could not be carried.
    type Error;
    /// `method path` with `body`, sending `Cookie: kbs-session-id=<cookie>`
    /// when given.
    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        body: &[u8],
    ) -> Result<Reply, Self::Error>;
}

/// Produces the TEE evidence (`primary_evidence`) for a REPORT_DATA.
pub trait Attester {
    /// Why evidence could not be produced.
    type Error;
    /// Evidence whose report carries `report_data`.
    fn evidence(&mut self, report_data: &[u8; 64]) -> Result<serde_json::Value, Self::Error>;
}

/// The step of the exchange the KBS refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `POST /kbs/v0/auth`.
    Auth,
    /// `POST /kbs/v0/attest`.
    Attest,
    /// `GET /kbs/v0/resource/...`.
    Resource,
}

impl Step {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Step::Auth => "auth",
            Step::Attest => "attest",
            Step::Resource => "resource",
        }
    }
}

/// Why the exchange failed.
#[derive(Debug)]
pub enum FlowError<T, A> {
    /// The transport failed.
    Transport(T),
    /// The attester failed.
    Attester(A),
    /// The KBS refused a step: its status and `{type, detail}` (the last
    /// path segment of the type).
    Refused {
        step: Step,
        status: u16,
        kind: String,
        detail: String,
    },
    /// The auth reply set no session cookie.
    NoCookie,
    /// A protocol step failed on this side (challenge, JWE).
    Protocol(KbsError),
}

/// Exit codes of umbra's KBS clients, `umbra-agent fetch-secret` and the
/// firmware's `kbs` scenario (docs/attestation.md): one per way the
/// exchange ends, so that scripts and tests tell refusals apart.
pub mod exit {
    /// The KBS could not be reached (or the transport failed).
    pub const UNREACHABLE: u8 = 3;
    /// No evidence could be obtained.
    pub const EVIDENCE: u8 = 4;
    /// `auth` refused.
    pub const REFUSED_AUTH: u8 = 5;
    /// `attest` refused (evidence not authentic, nonce, binding...).
    pub const REFUSED_ATTEST: u8 = 6;
    /// `attest` refused by the appraisal policy (403).
    pub const REFUSED_POLICY: u8 = 7;
    /// The resource was refused.
    pub const REFUSED_RESOURCE: u8 = 8;
    /// A protocol step failed on the client's side (no key, bad JWE...).
    pub const PROTOCOL: u8 = 9;
    /// The secret could not be stored.
    pub const WRITE: u8 = 10;
}

impl<T, A> FlowError<T, A> {
    /// The [`exit`] code of this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            FlowError::Transport(_) => exit::UNREACHABLE,
            FlowError::Attester(_) => exit::EVIDENCE,
            FlowError::Refused {
                step: Step::Auth, ..
            } => exit::REFUSED_AUTH,
            FlowError::Refused {
                step: Step::Attest,
                status: 403,
                ..
            } => exit::REFUSED_POLICY,
            FlowError::Refused {
                step: Step::Attest, ..
            } => exit::REFUSED_ATTEST,
            FlowError::Refused {
                step: Step::Resource,
                ..
            } => exit::REFUSED_RESOURCE,
            FlowError::NoCookie | FlowError::Protocol(_) => exit::PROTOCOL,
        }
    }
}

impl<T, A> From<KbsError> for FlowError<T, A> {
    fn from(e: KbsError) -> Self {
        FlowError::Protocol(e)
    }
}

fn refused<T, A>(step: Step, reply: &Reply) -> FlowError<T, A> {
    let info: Option<kbs_types::ErrorInformation> = serde_json::from_slice(&reply.body).ok();
    let (kind, detail) = match info {
        Some(i) => (
            i.error_type
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string(),
            i.detail,
        ),
        None => (
            String::from("unknown"),
            String::from_utf8_lossy(&reply.body).into_owned(),
        ),
    };
    FlowError::Refused {
        step,
        status: reply.status,
        kind,
        detail,
    }
}

/// Whether `resource` is `REPO/TYPE/TAG` as a KBS names resources: three
/// non-empty segments of letters, digits, `-`, `_` and `.`, none `.` or
/// `..` (it goes into the request line as it is).
pub fn resource_ok(resource: &str) -> bool {
    resource.split('/').count() == 3
        && resource.split('/').all(|s| {
            !s.is_empty()
                && s.len() <= 128
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                && s != "."
                && s != ".."
        })
}

/// The value of the session cookie in a `Set-Cookie` header.
fn session_cookie(set_cookie: &str) -> Option<&str> {
    let (name, value) = set_cookie.split(';').next()?.split_once('=')?;
    (name.trim() == COOKIE && !value.is_empty()).then_some(value.trim())
}

/// What to fetch, and with what.
#[derive(Debug, Clone, Copy)]
pub struct Fetch<'a> {
    /// 32 random bytes for the session key.
    pub seed: &'a [u8; 32],
    /// `repo/type/tag`.
    pub resource: &'a str,
    /// An initdata TOML document to send as `init-data`.
    pub init_data: Option<&'a str>,
}

/// Runs the exchange of `fetch`; returns the secret.
pub fn fetch_resource<T: Transport, A: Attester>(
    transport: &mut T,
    attester: &mut A,
    fetch: Fetch<'_>,
) -> Result<Vec<u8>, FlowError<T::Error, A::Error>> {
    let mut session = KbsSession::new(fetch.seed)?;
    if let Some(toml) = fetch.init_data {
        session = session.with_init_data(toml);
    }
    let auth = transport
        .exchange("POST", "/kbs/v0/auth", None, &KbsSession::auth_request())
        .map_err(FlowError::Transport)?;
    if auth.status != 200 {
        return Err(refused(Step::Auth, &auth));
    }
    let cookie = auth
        .set_cookie
        .as_deref()
        .and_then(session_cookie)
        .ok_or(FlowError::NoCookie)?
        .to_string();
    session.accept_challenge(&auth.body)?;
    let report_data = session.report_data()?;
    let evidence = attester
        .evidence(&report_data)
        .map_err(FlowError::Attester)?;
    let body = session.attest_request(evidence)?;
    let attest = transport
        .exchange("POST", "/kbs/v0/attest", Some(&cookie), &body)
        .map_err(FlowError::Transport)?;
    if attest.status != 200 {
        return Err(refused(Step::Attest, &attest));
    }
    let path = format!("/kbs/v0/resource/{}", fetch.resource);
    let got = transport
        .exchange("GET", &path, Some(&cookie), &[])
        .map_err(FlowError::Transport)?;
    if got.status != 200 {
        return Err(refused(Step::Resource, &got));
    }
    Ok(session.decrypt(&got.body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_three_plain_segments() {
        assert!(resource_ok("default/key/1"));
        assert!(resource_ok("a.b/c-d/e_f"));
        for bad in [
            "a/b",
            "a/b/c/d",
            "a//c",
            "a/../c",
            "a/b/c d",
            "a/b/c\r\n",
            "a/./c",
        ] {
            assert!(!resource_ok(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_session_cookie_is_found_by_name() {
        assert_eq!(
            session_cookie("kbs-session-id=abc; Path=/kbs; HttpOnly"),
            Some("abc")
        );
        assert_eq!(session_cookie("other=abc; Path=/"), None);
        assert_eq!(session_cookie("kbs-session-id=; Path=/"), None);
        assert_eq!(session_cookie("garbage"), None);
    }

    #[test]
    fn refusals_map_to_their_exit_codes() {
        let refused = |step, status| FlowError::<(), ()>::Refused {
            step,
            status,
            kind: String::new(),
            detail: String::new(),
        };
        assert_eq!(refused(Step::Auth, 400).exit_code(), exit::REFUSED_AUTH);
        assert_eq!(refused(Step::Attest, 401).exit_code(), exit::REFUSED_ATTEST);
        assert_eq!(refused(Step::Attest, 403).exit_code(), exit::REFUSED_POLICY);
        assert_eq!(
            refused(Step::Resource, 403).exit_code(),
            exit::REFUSED_RESOURCE
        );
        assert_eq!(
            FlowError::<(), ()>::Transport(()).exit_code(),
            exit::UNREACHABLE
        );
        assert_eq!(FlowError::<(), ()>::NoCookie.exit_code(), exit::PROTOCOL);
    }

    #[test]
    fn a_kbs_error_body_names_its_kind() {
        let reply = Reply {
            status: 401,
            set_cookie: None,
            body: br#"{"type":"https://github.com/confidential-containers/kbs/errors/NonceUsed","detail":"used"}"#.to_vec(),
        };
        match refused::<(), ()>(Step::Attest, &reply) {
            FlowError::Refused {
                kind,
                detail,
                status,
                ..
            } => {
                assert_eq!(
                    (kind.as_str(), detail.as_str(), status),
                    ("NonceUsed", "used", 401)
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
