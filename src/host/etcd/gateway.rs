//! The JSON of etcd's gRPC gateway, as etcd 3.4 to 3.6 write it.
//!
//! The gateway marshals protobuf messages with their field names as declared (`dbSize`,
//! `peerURLs`, but `cluster_id` in headers), leaves out fields with zero values (`isLearner`
//! is only there when true) and writes 64-bit integers as JSON strings. Every field is
//! therefore optional here, and integers are read from strings or numbers.

use serde::{Deserialize, Deserializer};

use super::Member;

/// Reads a uint64 the gateway wrote as a string (or, leniently, as a number).
pub(crate) fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Wire {
        Text(String),
        Number(u64),
    }
    match Wire::deserialize(d)? {
        Wire::Number(n) => Ok(n),
        Wire::Text(s) => s.parse().map_err(|_| serde::de::Error::custom(format!("{s:?} is not a uint64"))),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Header {
    #[serde(deserialize_with = "lenient_u64")]
    pub cluster_id: u64,
    #[serde(deserialize_with = "lenient_u64")]
    pub member_id: u64,
    #[serde(deserialize_with = "lenient_u64")]
    pub raft_term: u64,
    /// The key-value store's revision when the member answered.
    #[serde(deserialize_with = "lenient_u64")]
    pub revision: u64,
}

/// `/v3/maintenance/status`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct StatusAnswer {
    pub header: Header,
    pub version: String,
    #[serde(deserialize_with = "lenient_u64")]
    pub db_size: u64,
    #[serde(deserialize_with = "lenient_u64")]
    pub db_size_in_use: u64,
    #[serde(deserialize_with = "lenient_u64")]
    pub leader: u64,
    #[serde(deserialize_with = "lenient_u64")]
    pub raft_index: u64,
    #[serde(deserialize_with = "lenient_u64")]
    pub raft_term: u64,
    #[serde(deserialize_with = "lenient_u64")]
    pub raft_applied_index: u64,
    pub errors: Vec<String>,
    pub is_learner: bool,
}

/// `/v3/cluster/member/{list,promote,remove}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct MembersAnswer {
    pub members: Vec<Member>,
}

/// `/v3/cluster/member/add`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct AddAnswer {
    pub member: Option<Member>,
    pub members: Vec<Member>,
}

/// `/health`: `{"health":"true"}`; etcd 3.5 and later add a `reason` when unhealthy.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct HealthAnswer {
    pub health: String,
    pub reason: String,
}
