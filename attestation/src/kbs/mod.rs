//! The relying-party side of the Trustee KBS protocol (RCAR, version
//! 0.4.0): `umbra-attest serve`. A guest authenticates (`/kbs/v0/auth`,
//! a single-use nonce in a cookie session), attests (`/kbs/v0/attest`:
//! SNP evidence whose REPORT_DATA binds the nonce and its ephemeral key,
//! checked against the trust root and the TOML policy), and fetches
//! resources (`/kbs/v0/resource/<repo>/<type>/<tag>`), each encrypted to
//! its key as a JWE. Wire types are Trustee's (`kbs-types`); the binding
//! and the JCS form are the client library's (`umbra-kbs-client`), one
//! implementation for both ends.

pub mod evidence;
pub mod jwe;
pub mod rate;
pub mod server;
pub mod tls;
