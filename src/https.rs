//! HTTPS over any byte stream (a TCP socket or an SSH tunnel), verifying servers against a given
//! CA and optionally presenting a client certificate: how kubeha talks to etcd and apiservers.
//!
//! (Interface stub: the implementation replaces this.)
