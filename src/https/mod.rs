//! HTTPS over any byte stream (a TCP socket or an SSH tunnel), verifying servers against a given
//! CA and optionally presenting a client certificate: how kubeha talks to etcd and apiservers.
//!
//! kubeha never trusts the system's root store: every server it talks to (etcd, an apiserver,
//! the VIP in front of them) is checked against the cluster's own CA and a server name, which is
//! a DNS name or an IP address such as `127.0.0.1` for etcd reached through an SSH tunnel. The
//! client works over any `AsyncRead + AsyncWrite` stream so the same code serves plain TCP and
//! `direct-tcpip` channels.
//!
//! Errors ([`HttpsError`]) separate certificate verification failures (wrong CA, name mismatch,
//! expiry) from connection and HTTP failures, and never carry key material.

mod client;
mod error;
mod pem;
mod url;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

pub use client::{Request, Response, StreamingResponse, TlsClient};
pub use error::{HttpsError, VerifyFailure, describe_certificate_error};
pub use pem::{
    ClientIdentity, certificates, key_matches_certificate, private_key, provider, public_key_of, read_certificates,
    read_private_key,
};
pub use url::HttpsUrl;
