//! Operations on one host, generic over [`crate::transport::Remote`]: where things live
//! ([`layout`]), and the typed clients and file operations every command builds on.

pub mod apiserver;
pub mod certs;
pub mod cleanup;
pub mod etcd;
pub mod etcd_restore;
pub mod facts;
pub mod files;
pub mod layout;
pub mod lock;
pub mod pods;
pub mod static_pods;
pub mod status;
