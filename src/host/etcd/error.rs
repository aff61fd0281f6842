//! What can go wrong asking etcd, and whether asking again may help.
//!
//! Every error names the host and the operation; its [`EtcdErrorKind`] says what happened. The
//! answers callers act on have their own kinds ([`EtcdErrorKind::LearnerNotReady`],
//! [`EtcdErrorKind::MemberNotFound`], ...) recognised from etcd's error messages, which are
//! the same text from etcd 3.4 to 3.6 (`etcdserver: ...`, `api/v3rpc/rpctypes`).
//! [`EtcdError::is_retryable`] sorts them the way kubeha's waits need: retry what a starting or
//! busy member may answer, stop at once on what retrying cannot change (a lost SSH connection,
//! a certificate that does not verify, a member that does not exist).

use std::fmt;

use serde::Deserialize;

use crate::https::HttpsError;
use crate::transport::TransportError;

/// An etcd operation, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EtcdOp {
    Health,
    Status,
    MemberList,
    AddLearner,
    Promote { id: u64 },
    Remove { id: u64 },
    Snapshot,
}

/// Member ids in hex, as `etcdctl member list` prints them.
impl fmt::Display for EtcdOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EtcdOp::Health => f.write_str("health check"),
            EtcdOp::Status => f.write_str("status"),
            EtcdOp::MemberList => f.write_str("member list"),
            EtcdOp::AddLearner => f.write_str("adding a learner"),
            EtcdOp::Promote { id } => write!(f, "promoting member {id:x}"),
            EtcdOp::Remove { id } => write!(f, "removing member {id:x}"),
            EtcdOp::Snapshot => f.write_str("snapshot"),
        }
    }
}

/// An etcd operation on a host failed.
#[derive(Debug, thiserror::Error)]
#[error("{host}: etcd {op}: {kind}")]
#[non_exhaustive]
pub struct EtcdError {
    /// The host's inventory name.
    pub host: String,
    pub op: EtcdOp,
    #[source]
    pub kind: EtcdErrorKind,
}

/// What went wrong (see [`EtcdError`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdErrorKind {
    /// The SSH tunnel to etcd's port could not be opened.
    #[error(transparent)]
    Tunnel(TransportError),
    /// TLS or HTTP failed (certificate rejected, connection cut, timeout).
    #[error(transparent)]
    Https(HttpsError),
    /// `/health` did not answer healthy.
    #[error("unhealthy (HTTP {status}): {reason}")]
    Unhealthy { status: u16, reason: String },
    /// The learner has not caught up with the leader yet; promote it later.
    #[error("the learner is not in sync with the leader yet")]
    LearnerNotReady,
    /// The member to promote is not a learner (already promoted?).
    #[error("the member is not a learner")]
    NotALearner,
    /// No member has that id (already removed?).
    #[error("no such member")]
    MemberNotFound,
    /// The cluster already has as many learners as it allows (etcd 3.4: one): promote or
    /// remove that one first.
    #[error("the cluster already has a learner; it must be promoted or removed first")]
    TooManyLearners,
    /// A member with these peer URLs exists already (added before?). etcd says "member ID
    /// already exist" instead when the same URLs are added twice within a second (a member id
    /// is a hash of the peer URLs and the time in seconds); both are this kind.
    #[error("a member with these peer URLs already exists")]
    PeerUrlsExist,
    /// Any other error etcd answered: its HTTP status, gRPC code and message.
    #[error("etcd answered HTTP {status}{}: {message}", code.map(|c| format!(" (gRPC code {c})")).unwrap_or_default())]
    Rejected { status: u16, code: Option<i32>, message: String },
    /// A successful answer kubeha cannot read (not etcd's JSON gateway?).
    #[error("unexpected answer: {detail}")]
    BadAnswer { detail: String },
    /// The snapshot stream was cut short or its checksum (appended by etcd) does not match:
    /// whatever was written to the sink is not a usable snapshot.
    #[error("the snapshot is damaged: {detail}")]
    SnapshotDamaged { detail: String },
    /// Writing the snapshot to its destination failed.
    #[error("writing the snapshot: {0}")]
    Sink(std::io::Error),
}

impl EtcdError {
    /// The kind of error.
    pub fn kind(&self) -> &EtcdErrorKind {
        &self.kind
    }

    /// Whether asking again later may succeed: etcd not up yet, busy, without a leader, a
    /// learner still catching up. Not: the SSH connection is gone, the certificate does not
    /// verify, the member does not exist, the answer is unreadable, the sink failed.
    pub fn is_retryable(&self) -> bool {
        match &self.kind {
            EtcdErrorKind::Tunnel(e) => tunnel_is_retryable(e),
            EtcdErrorKind::Https(e) => https_is_retryable(e),
            EtcdErrorKind::Unhealthy { .. }
            | EtcdErrorKind::LearnerNotReady
            | EtcdErrorKind::TooManyLearners
            | EtcdErrorKind::SnapshotDamaged { .. } => true,
            EtcdErrorKind::Rejected { status, code, .. } => match code {
                // DeadlineExceeded, ResourceExhausted, Aborted, Unavailable ("etcdserver:
                // unhealthy cluster", "leader changed", "request timed out", no leader).
                Some(code) => matches!(code, 4 | 8 | 10 | 14),
                None => *status >= 500 || *status == 429,
            },
            EtcdErrorKind::NotALearner
            | EtcdErrorKind::MemberNotFound
            | EtcdErrorKind::PeerUrlsExist
            | EtcdErrorKind::BadAnswer { .. }
            | EtcdErrorKind::Sink(_) => false,
        }
    }
}

/// Whether a failure to open a tunnel may go away: not when the SSH connection is gone or the
/// server refuses forwarding.
pub(crate) fn tunnel_is_retryable(e: &TransportError) -> bool {
    !matches!(e, TransportError::Disconnected { .. } | TransportError::ForwardingRefused { .. })
}

/// Whether an HTTPS failure may go away: not for a certificate that does not verify or a
/// client that cannot be configured. A failed handshake counts as retryable: a server that is
/// starting or restarting cuts handshakes short.
pub(crate) fn https_is_retryable(e: &HttpsError) -> bool {
    !(e.is_verification_failure()
        || matches!(
            e,
            HttpsError::Pem { .. } | HttpsError::Config { .. } | HttpsError::ServerName { .. } | HttpsError::Url { .. }
        ))
}

/// The kind for an unsuccessful answer of the JSON gateway. Its body is
/// `{"error": "...", "message": "...", "code": N}` (grpc-gateway v1, etcd 3.4/3.5) or
/// `{"code": N, "message": "..."}` (v2, etcd 3.6); anything else is quoted as text.
pub(crate) fn rejection(status: u16, body: &[u8]) -> EtcdErrorKind {
    #[derive(Deserialize)]
    struct GatewayError {
        #[serde(default)]
        error: Option<serde_json::Value>,
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        code: Option<i32>,
    }
    let (code, message) = match serde_json::from_slice::<GatewayError>(body) {
        Ok(e) => {
            let error = match e.error {
                Some(serde_json::Value::String(s)) => Some(s),
                _ => None,
            };
            let message = e.message.filter(|m| !m.is_empty()).or(error);
            (e.code, message.unwrap_or_else(|| text(body)))
        }
        Err(_) => (None, text(body)),
    };
    classify(status, code, message)
}

/// The kind for an error message of etcd (a gateway error or an error inside a stream).
pub(crate) fn classify(status: u16, code: Option<i32>, message: String) -> EtcdErrorKind {
    // The texts of rpctypes' ErrGRPC* errors.
    match message.trim() {
        "etcdserver: can only promote a learner member which is in sync with leader" => EtcdErrorKind::LearnerNotReady,
        "etcdserver: can only promote a learner member" => EtcdErrorKind::NotALearner,
        "etcdserver: member not found" => EtcdErrorKind::MemberNotFound,
        "etcdserver: too many learner members in cluster" => EtcdErrorKind::TooManyLearners,
        "etcdserver: Peer URLs already exists" | "etcdserver: member ID already exist" => EtcdErrorKind::PeerUrlsExist,
        _ => EtcdErrorKind::Rejected { status, code, message },
    }
}

/// A body as one line of text for a message (at most 300 characters).
pub(crate) fn text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text.trim().lines().next().unwrap_or("").trim();
    match line.char_indices().nth(300) {
        Some((end, _)) => format!("{}…", &line[..end]),
        None => line.to_string(),
    }
}
