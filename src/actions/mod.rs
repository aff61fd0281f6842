//! What kubeha does to hosts: commands built from phases (connect, preflight, push, wait).

pub mod checks;
pub mod connect;
pub mod facts;
pub mod fanout;
pub mod init;
pub mod lock;
pub mod preflight;
pub mod progress;
pub mod push;
pub mod wait;
