//! What commands do to hosts, built from shared steps.
//!
//! A command opens a [`session::Session`] (lock, connections, options, progress), runs
//! [`preflight`] with its own rules, and changes hosts only through [`rollout::converge`], whose
//! restart policy and health gates are inputs. `init` is the worked example: a short sequence
//! of these steps.

pub mod checks;
pub mod error;
pub mod expiry;
#[cfg(test)]
pub mod fake;
pub mod fanout;
pub mod init;
pub mod join;
pub mod lock;
pub mod membership;
pub mod objects;
pub mod preflight;
pub mod progress;
pub mod remove;
pub mod removed;
pub mod renew;
pub mod reset;
pub mod restore;
pub mod rollout;
pub mod rotate;
pub mod scratch;
pub mod session;
pub mod snapshot;
pub mod status;
pub mod wait;
