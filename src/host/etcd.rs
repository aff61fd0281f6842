//! The etcd member of a host, asked through an SSH tunnel to its client port on the host's
//! loopback: health, status, membership (learners added, promoted, removed) and snapshots.
//!
//! kubeha speaks to etcd's JSON gateway (`/v3/...` on the client port, served by etcd 3.4 to
//! 3.6) with [`TlsClient`], not gRPC: no generated code, no `protoc`, and the same HTTPS client
//! and tunnel every other health check uses. The member's serving certificate is verified
//! against the etcd CA for the loopback address (kubeadm puts 127.0.0.1 and ::1 in it); the
//! caller chooses the client identity (`etcd/healthcheck-client` to look,
//! `apiserver-etcd-client` to change membership, as kubeadm does).
//!
//! Every operation opens its own tunnel: calls are rare, and a fresh channel survives an etcd
//! restart in between. Results are typed ([`Member`], [`Status`], ...; ids are `u64`, which the
//! gateway writes as strings) and failures are [`EtcdError`]s that name the host and the
//! operation and say whether retrying may help.

mod error;
mod gateway;
mod snapshot;
#[cfg(test)]
mod tests;

use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncWrite, AsyncWriteExt};

pub use error::{EtcdError, EtcdErrorKind, EtcdOp};
pub(crate) use error::{https_is_retryable, tunnel_is_retryable};
pub use snapshot::SnapshotInfo;

use super::layout;
use crate::https::{ClientIdentity, HttpsError, Request, Response, TlsClient};
use crate::plan::Host;
use crate::transport::{Remote, Tunnel};
use error::{rejection, text};
use gateway::lenient_u64;

/// One etcd member as the member list reports it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Member {
    /// The member id (0 if the answer had none).
    #[serde(default, rename = "ID", deserialize_with = "lenient_u64")]
    pub id: u64,
    /// Empty until the member has started and published its name.
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    /// Empty until the member has started.
    #[serde(default, rename = "clientURLs")]
    pub client_urls: Vec<String>,
    #[serde(default, rename = "isLearner")]
    pub is_learner: bool,
}

impl Member {
    /// Whether the member has started (a member added but not yet running has no name).
    pub fn is_started(&self) -> bool {
        !self.name.is_empty()
    }
}

/// What one member says about itself and the cluster (`etcdctl endpoint status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub cluster_id: u64,
    /// The id of the member that answered.
    pub member_id: u64,
    /// The leader's id; 0 when the member knows no leader.
    pub leader_id: u64,
    pub raft_term: u64,
    pub raft_index: u64,
    pub raft_applied_index: u64,
    /// The key-value store's revision (what a snapshot taken now contains).
    pub revision: u64,
    /// Size of the database file in bytes.
    pub db_size: u64,
    /// Bytes of the database in use (etcd 3.4+); the rest is reclaimed by defragmentation.
    pub db_size_in_use: u64,
    /// The etcd server version, e.g. `3.5.16`.
    pub version: String,
    pub is_learner: bool,
    /// Alarms and errors the member reports (e.g. `memberID:... alarm:NOSPACE`).
    pub errors: Vec<String>,
}

impl Status {
    /// Whether the member that answered is the leader.
    pub fn is_leader(&self) -> bool {
        self.leader_id != 0 && self.leader_id == self.member_id
    }
}

/// A learner etcd added, and the member list that includes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberAdded {
    /// The new member: its id, peer URLs, no name yet.
    pub member: Member,
    pub members: Vec<Member>,
}

/// The etcd member on one host, reached through `remote`.
pub struct EtcdClient<'r, R> {
    remote: &'r R,
    /// The host's loopback address: where the tunnel goes and the name the certificate must
    /// carry.
    address: String,
    port: u16,
    tls: TlsClient,
}

impl<R: Remote> std::fmt::Debug for EtcdClient<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdClient")
            .field("host", &self.remote.host())
            .field("address", &self.address)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl<'r, R: Remote> EtcdClient<'r, R> {
    /// The member on `host` (its loopback, [`layout::ETCD_CLIENT_PORT`]) through `remote`,
    /// verified against the etcd CA in `ca_pem`, presenting `identity`.
    pub fn new(remote: &'r R, host: &Host, ca_pem: &[u8], identity: &ClientIdentity) -> Result<Self, HttpsError> {
        Ok(EtcdClient::with_tls(remote, host, TlsClient::new(ca_pem, Some(identity))?))
    }

    /// Like [`EtcdClient::new`] with a TLS client built once for many hosts (it must trust
    /// the etcd CA and present a client certificate etcd accepts).
    pub fn with_tls(remote: &'r R, host: &Host, tls: TlsClient) -> Self {
        EtcdClient { remote, address: host.loopback().to_string(), port: layout::ETCD_CLIENT_PORT, tls }
    }

    /// Another client port than etcd's default.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The time allowed for one call (for a snapshot: for each wait for data).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.tls = self.tls.with_timeout(timeout);
        self
    }

    /// The host's inventory name.
    pub fn host(&self) -> &str {
        self.remote.host()
    }

    /// `GET /health`: Ok when the member answers healthy (it has a leader, no alarm, and can
    /// serve a read), else [`EtcdErrorKind::Unhealthy`] with etcd's reason.
    pub async fn health(&self) -> Result<(), EtcdError> {
        let op = EtcdOp::Health;
        let response = self.send(op, &Request::get("/health")).await?;
        let reason = match response.json::<gateway::HealthAnswer>() {
            Ok(h) if response.is_success() && h.health == "true" => return Ok(()),
            Ok(h) if !h.reason.is_empty() => h.reason,
            Ok(h) if !h.health.is_empty() => format!("health is {:?}", h.health),
            _ => text(&response.body),
        };
        Err(self.error(op, EtcdErrorKind::Unhealthy { status: response.status, reason }))
    }

    /// The member's status (`/v3/maintenance/status`).
    pub async fn status(&self) -> Result<Status, EtcdError> {
        let s: gateway::StatusAnswer =
            self.call(EtcdOp::Status, "/v3/maintenance/status", serde_json::json!({})).await?;
        Ok(Status {
            cluster_id: s.header.cluster_id,
            member_id: s.header.member_id,
            leader_id: s.leader,
            raft_term: if s.raft_term != 0 { s.raft_term } else { s.header.raft_term },
            raft_index: s.raft_index,
            raft_applied_index: s.raft_applied_index,
            revision: s.header.revision,
            db_size: s.db_size,
            db_size_in_use: s.db_size_in_use,
            version: s.version,
            is_learner: s.is_learner,
            errors: s.errors,
        })
    }

    /// The member list as this member sees it.
    pub async fn members(&self) -> Result<Vec<Member>, EtcdError> {
        let list: gateway::MembersAnswer =
            self.call(EtcdOp::MemberList, "/v3/cluster/member/list", serde_json::json!({})).await?;
        Ok(list.members)
    }

    /// Adds a learner with `peer_urls` (`https://<address>:2380`); it does not vote until
    /// [promoted](EtcdClient::promote). etcd allows one learner at a time
    /// ([`EtcdErrorKind::TooManyLearners`]) and refuses peer URLs a member already has
    /// ([`EtcdErrorKind::PeerUrlsExist`]).
    pub async fn add_learner<S: AsRef<str>>(&self, peer_urls: &[S]) -> Result<MemberAdded, EtcdError> {
        let op = EtcdOp::AddLearner;
        let urls: Vec<&str> = peer_urls.iter().map(AsRef::as_ref).collect();
        let body = serde_json::json!({"peerURLs": urls, "isLearner": true});
        let added: gateway::AddAnswer = self.call(op, "/v3/cluster/member/add", body).await?;
        let member = added
            .member
            .ok_or_else(|| self.error(op, EtcdErrorKind::BadAnswer { detail: "no member in the answer".into() }))?;
        Ok(MemberAdded { member, members: added.members })
    }

    /// Promotes learner `id` to a voting member; returns the member list. Fails with the
    /// retryable [`EtcdErrorKind::LearnerNotReady`] while the learner is behind the leader,
    /// and with [`EtcdErrorKind::NotALearner`] for a voting member.
    pub async fn promote(&self, id: u64) -> Result<Vec<Member>, EtcdError> {
        let body = serde_json::json!({"ID": id.to_string()});
        let list: gateway::MembersAnswer =
            self.call(EtcdOp::Promote { id }, "/v3/cluster/member/promote", body).await?;
        Ok(list.members)
    }

    /// Removes member `id`; returns the member list left.
    pub async fn remove(&self, id: u64) -> Result<Vec<Member>, EtcdError> {
        let body = serde_json::json!({"ID": id.to_string()});
        let list: gateway::MembersAnswer = self.call(EtcdOp::Remove { id }, "/v3/cluster/member/remove", body).await?;
        Ok(list.members)
    }

    /// Streams a snapshot of the member's database into `sink` as it arrives, byte for byte as
    /// `etcdctl snapshot save` would write it (etcd's SHA-256 of the database at the end), and
    /// flushes it. etcd's checksum is verified at the end: on any error the sink holds a
    /// partial or damaged copy that must be discarded. Syncing a file to disk is the caller's.
    pub async fn snapshot<W: AsyncWrite + Unpin + Send>(&self, sink: &mut W) -> Result<SnapshotInfo, EtcdError> {
        let op = EtcdOp::Snapshot;
        let https = |e| self.error(op, EtcdErrorKind::Https(e));
        let tunnel = self.tunnel(op).await?;
        let request = Request::post_json("/v3/maintenance/snapshot", &serde_json::json!({}));
        let mut response = self.tls.request_streaming(tunnel, &self.address, &request).await.map_err(https)?;
        if !response.is_success() {
            let answer = response.into_response().await.map_err(https)?;
            return Err(self.error(op, rejection(answer.status, &answer.body)));
        }
        let mut decoder = snapshot::Decoder::new();
        while let Some(data) = response.chunk().await.map_err(https)? {
            let bytes = decoder.feed(&data).map_err(|kind| self.error(op, kind))?;
            sink.write_all(&bytes).await.map_err(|e| self.error(op, EtcdErrorKind::Sink(e)))?;
        }
        let (bytes, info) = decoder.finish().map_err(|kind| self.error(op, kind))?;
        sink.write_all(&bytes).await.map_err(|e| self.error(op, EtcdErrorKind::Sink(e)))?;
        sink.flush().await.map_err(|e| self.error(op, EtcdErrorKind::Sink(e)))?;
        Ok(info)
    }

    /// `POST path` with `body`; a successful answer is read as `T`, any other is an error.
    async fn call<T: DeserializeOwned>(&self, op: EtcdOp, path: &str, body: serde_json::Value) -> Result<T, EtcdError> {
        let response = self.send(op, &Request::post_json(path, &body)).await?;
        if !response.is_success() {
            return Err(self.error(op, rejection(response.status, &response.body)));
        }
        response
            .json()
            .map_err(|e| self.error(op, EtcdErrorKind::BadAnswer { detail: format!("{e}: {}", text(&response.body)) }))
    }

    async fn send(&self, op: EtcdOp, request: &Request) -> Result<Response, EtcdError> {
        let tunnel = self.tunnel(op).await?;
        self.tls.request(tunnel, &self.address, request).await.map_err(|e| self.error(op, EtcdErrorKind::Https(e)))
    }

    async fn tunnel(&self, op: EtcdOp) -> Result<Tunnel, EtcdError> {
        self.remote.open_tcp(&self.address, self.port).await.map_err(|e| self.error(op, EtcdErrorKind::Tunnel(e)))
    }

    fn error(&self, op: EtcdOp, kind: EtcdErrorKind) -> EtcdError {
        EtcdError { host: self.remote.host().to_string(), op, kind }
    }
}
