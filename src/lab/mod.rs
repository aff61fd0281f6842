//! The local lab: hosts made of network namespaces, each with its own sshd and kubelet stand-in.
//!
//! (Interface stub: the implementation replaces the bodies.)
