//! Remote hosts: running commands and writing files over SSH.
//!
//! (Interface stub: the implementation replaces the bodies.)
