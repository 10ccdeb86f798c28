//! TLS for `umbra-attest serve --listen` (OpenSSL, Mozilla's "intermediate"
//! profile: TLS 1.2 and 1.3) and for the clients that reach it over TCP.
//! Without TLS the cookie and the token travel in clear; the secret itself
//! is sealed to the guest's key either way.

use super::server::Kbs;
use openssl::ssl::{SslAcceptor, SslConnector, SslFiletype, SslMethod, SslStream};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// How long a TLS handshake (and each read after it) may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why TLS could not be set up.
#[derive(Debug, Error)]
pub enum TlsError {
    /// The certificate chain or key could not be loaded, or do not match.
    #[error("cannot load the TLS certificate {cert} and key {key}")]
    LoadIdentity {
        /// The certificate chain file (PEM).
        cert: String,
        /// The key file (PEM).
        key: String,
        /// OpenSSL's reason.
        #[source]
        source: openssl::error::ErrorStack,
    },
    /// The trust anchors could not be loaded.
    #[error("cannot load the TLS trust anchors {0}")]
    LoadAnchors(String, #[source] openssl::error::ErrorStack),
    /// The client could not be set up.
    #[error("cannot set up TLS")]
    Setup(#[source] openssl::error::ErrorStack),
}

/// A server context for the PEM certificate chain and key.
pub fn acceptor(cert: &Path, key: &Path) -> Result<Arc<SslAcceptor>, TlsError> {
    let load = || -> Result<SslAcceptor, openssl::error::ErrorStack> {
        let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
        builder.set_certificate_chain_file(cert)?;
        builder.set_private_key_file(key, SslFiletype::PEM)?;
        builder.check_private_key()?;
        Ok(builder.build())
    };
    load()
        .map(Arc::new)
        .map_err(|source| TlsError::LoadIdentity {
            cert: cert.display().to_string(),
            key: key.display().to_string(),
            source,
        })
}

/// A client context trusting the PEM anchors in `ca` (or the system's).
pub fn connector(ca: Option<&Path>) -> Result<SslConnector, TlsError> {
    let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(TlsError::Setup)?;
    if let Some(ca) = ca {
        builder
            .set_ca_file(ca)
            .map_err(|e| TlsError::LoadAnchors(ca.display().to_string(), e))?;
    }
    Ok(builder.build())
}

impl Kbs {
    /// Serves TCP `incoming` over TLS: each connection's handshake runs in
    /// its own thread, bounded by [`HANDSHAKE_TIMEOUT`]; a failed one is
    /// dropped.
    pub fn serve_tls<I>(self: &Arc<Self>, incoming: I, acceptor: Arc<SslAcceptor>)
    where
        I: Iterator<Item = std::io::Result<TcpStream>>,
    {
        self.serve_upgraded(incoming, move |stream: TcpStream| {
            stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).ok()?;
            stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT)).ok()?;
            acceptor.accept(stream).ok()
        });
    }
}

/// A TLS stream to `host:port`, verifying the server's name `host`.
pub fn connect(connector: &SslConnector, host_port: &str) -> std::io::Result<SslStream<TcpStream>> {
    let host = host_port
        .rsplit_once(':')
        .map_or(host_port, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let tcp = TcpStream::connect(host_port)?;
    connector.connect(host, tcp).map_err(std::io::Error::other)
}
