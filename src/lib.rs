//! kubeha: bootstraps and runs highly available Kubernetes control planes over SSH.
//!
//! Data flows one way: [`inventory`] (YAML) → [`plan::Plan`] → [`pki`] (state directory) →
//! [`render`] (files per host, [`files::File`]) → [`transport`] (SSH). Each stage is usable and
//! testable on its own.

pub mod actions;
pub mod cli;
pub mod files;
pub mod host;
pub mod https;
pub mod inventory;
pub mod marker;
pub mod objects;
pub mod pki;
pub mod plan;
pub mod render;
pub mod ssh_config;
pub mod text;
pub mod transport;
pub mod version;
