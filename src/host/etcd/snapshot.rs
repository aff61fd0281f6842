//! Decoding etcd's snapshot stream as the JSON gateway sends it, and checking it is whole.
//!
//! `POST /v3/maintenance/snapshot` answers one JSON object per line,
//! `{"result":{"remaining_bytes":"N","blob":"<base64>"}}` (zero values are left out), or
//! `{"error":{...}}` when etcd gives up half way. The decoded blobs, concatenated, are the
//! snapshot file exactly as `etcdctl snapshot save` writes it: the bbolt database followed by
//! the SHA-256 of the database, which etcd appends as the last 32 bytes. [`Decoder`] is pure
//! (bytes in, bytes out) so that lines split anywhere by the network are tested without one;
//! it hashes as it goes and [`Decoder::finish`] checks etcd's checksum, so a stream cut short
//! cannot pass for a snapshot.

use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::error::{EtcdErrorKind, classify, text};
use super::gateway::lenient_u64;

/// A line longer than this is refused (etcd sends 32 KiB per message: about 44 KiB of JSON).
const MAX_LINE: usize = 4 << 20;
/// etcd appends the SHA-256 of the database.
const HASH_LEN: usize = 32;

/// The snapshot kubeha wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Bytes written (the database and etcd's 32-byte checksum).
    pub size: u64,
    /// SHA-256 (hex) of everything written, as `sha256sum` prints it for the file.
    pub sha256: String,
}

/// Turns the gateway's stream into the snapshot's bytes.
pub(crate) struct Decoder {
    line: Vec<u8>,
    size: u64,
    whole: Sha256,
    /// The SHA-256 of everything but the last [`HASH_LEN`] bytes seen so far, held in `tail`.
    database: Sha256,
    tail: Vec<u8>,
    /// `remaining_bytes` of the last message.
    remaining: u64,
    messages: u64,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    result: Option<Chunk>,
    #[serde(default)]
    error: Option<StreamError>,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default, deserialize_with = "lenient_u64")]
    remaining_bytes: u64,
    #[serde(default)]
    blob: String,
}

/// An error inside the stream (grpc-gateway v1: `grpc_code`/`http_code`; v2: `code`).
#[derive(Deserialize)]
struct StreamError {
    #[serde(default)]
    grpc_code: Option<i32>,
    #[serde(default)]
    code: Option<i32>,
    #[serde(default)]
    http_code: Option<u16>,
    #[serde(default)]
    message: String,
}

impl Decoder {
    pub(crate) fn new() -> Decoder {
        Decoder {
            line: Vec::new(),
            size: 0,
            whole: Sha256::new(),
            database: Sha256::new(),
            tail: Vec::with_capacity(2 * HASH_LEN),
            remaining: 0,
            messages: 0,
        }
    }

    /// Takes the next bytes of the body; returns the snapshot bytes of the messages it
    /// completed (possibly none).
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<Vec<u8>, EtcdErrorKind> {
        let mut out = Vec::new();
        let mut rest = data;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&rest[..end]);
            rest = &rest[end + 1..];
            let line = std::mem::take(&mut self.line);
            self.message(&line, &mut out)?;
        }
        if self.line.len() + rest.len() > MAX_LINE {
            return Err(damaged(format!("a message of the stream is longer than {MAX_LINE} bytes")));
        }
        self.line.extend_from_slice(rest);
        Ok(out)
    }

    /// The end of the body: decodes a last message without a newline, and checks that the
    /// stream said nothing remains and that etcd's checksum matches.
    pub(crate) fn finish(mut self) -> Result<(Vec<u8>, SnapshotInfo), EtcdErrorKind> {
        let mut out = Vec::new();
        let line = std::mem::take(&mut self.line);
        self.message(&line, &mut out)?;
        if self.messages == 0 {
            return Err(damaged("the stream was empty".to_string()));
        }
        if self.remaining != 0 {
            return Err(damaged(format!("the stream ended with {} bytes still to come", self.remaining)));
        }
        if self.tail.len() < HASH_LEN {
            return Err(damaged(format!("only {} bytes arrived", self.size)));
        }
        if self.database.finalize().as_slice() != self.tail.as_slice() {
            return Err(damaged("the SHA-256 appended by etcd does not match the data".to_string()));
        }
        Ok((out, SnapshotInfo { size: self.size, sha256: hex::encode(self.whole.finalize()) }))
    }

    fn message(&mut self, line: &[u8], out: &mut Vec<u8>) -> Result<(), EtcdErrorKind> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let message: Message = serde_json::from_slice(line)
            .map_err(|e| EtcdErrorKind::BadAnswer { detail: format!("snapshot stream: {e}: {}", text(line)) })?;
        if let Some(e) = message.error {
            return Err(classify(e.http_code.unwrap_or(200), e.grpc_code.or(e.code), e.message));
        }
        let Some(chunk) = message.result else {
            return Err(EtcdErrorKind::BadAnswer { detail: format!("snapshot stream: {}", text(line)) });
        };
        let blob = base64::engine::general_purpose::STANDARD
            .decode(chunk.blob.as_bytes())
            .map_err(|e| EtcdErrorKind::BadAnswer { detail: format!("snapshot stream: a blob is not base64: {e}") })?;
        self.messages += 1;
        self.remaining = chunk.remaining_bytes;
        self.consume(&blob);
        out.extend_from_slice(&blob);
        Ok(())
    }

    /// Hashes `bytes`: all into the whole file's hash, and all but the last 32 bytes seen so
    /// far into the database's.
    fn consume(&mut self, bytes: &[u8]) {
        self.size += bytes.len() as u64;
        self.whole.update(bytes);
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > HASH_LEN {
            let settled = self.tail.len() - HASH_LEN;
            self.database.update(&self.tail[..settled]);
            self.tail.drain(..settled);
        }
    }
}

fn damaged(detail: String) -> EtcdErrorKind {
    EtcdErrorKind::SnapshotDamaged { detail }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A snapshot as etcd makes it: data followed by its SHA-256.
    pub(crate) fn snapshot_bytes(len: usize) -> Vec<u8> {
        let mut data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let hash = Sha256::digest(&data);
        data.extend_from_slice(&hash);
        data
    }

    /// The gateway's stream for `bytes` in messages of `per` bytes.
    pub(crate) fn stream(bytes: &[u8], per: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut sent = 0;
        for chunk in bytes.chunks(per) {
            sent += chunk.len();
            let mut result = serde_json::json!({"blob": base64::engine::general_purpose::STANDARD.encode(chunk)});
            if sent < bytes.len() {
                result["remaining_bytes"] = (bytes.len() - sent).to_string().into();
            }
            out.extend_from_slice(serde_json::json!({"result": result}).to_string().as_bytes());
            out.push(b'\n');
        }
        out
    }

    fn decode(body: &[u8], split: usize) -> Result<(Vec<u8>, SnapshotInfo), EtcdErrorKind> {
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        for piece in body.chunks(split) {
            out.extend(decoder.feed(piece)?);
        }
        let (last, info) = decoder.finish()?;
        out.extend(last);
        Ok((out, info))
    }

    #[test]
    fn lines_split_anywhere_decode_to_the_exact_bytes() {
        let snapshot = snapshot_bytes(100_000);
        let body = stream(&snapshot, 32 * 1024);
        for split in [1, 7, 1000, 44_000, body.len()] {
            let (out, info) = decode(&body, split).unwrap();
            assert_eq!(out, snapshot, "split {split}");
            assert_eq!(info.size, snapshot.len() as u64);
            assert_eq!(info.sha256, hex::encode(Sha256::digest(&snapshot)));
        }
        // Without the final newline, as a server may end.
        let (out, _) = decode(&body[..body.len() - 1], 500).unwrap();
        assert_eq!(out, snapshot);
    }

    #[test]
    fn a_stream_cut_short_or_altered_is_damaged() {
        let snapshot = snapshot_bytes(100_000);
        let body = stream(&snapshot, 32 * 1024);
        // Cut after the first message: remaining_bytes says more was to come.
        let first = body.iter().position(|&b| b == b'\n').unwrap() + 1;
        let err = decode(&body[..first], 100).unwrap_err();
        assert!(matches!(&err, EtcdErrorKind::SnapshotDamaged { detail } if detail.contains("still to come")), "{err}");
        // A message without remaining_bytes but the wrong checksum.
        let mut altered = snapshot.clone();
        altered[10] ^= 1;
        let err = decode(&stream(&altered, 1 << 20), 100).unwrap_err();
        assert!(matches!(&err, EtcdErrorKind::SnapshotDamaged { detail } if detail.contains("SHA-256")), "{err}");
        assert!(matches!(decode(b"", 1).unwrap_err(), EtcdErrorKind::SnapshotDamaged { .. }));
        assert!(matches!(decode(&stream(&[1, 2, 3], 8), 8).unwrap_err(), EtcdErrorKind::SnapshotDamaged { .. }));
    }

    #[test]
    fn errors_inside_the_stream_and_garbage() {
        let mut body = stream(&snapshot_bytes(40_000), 32 * 1024);
        body.truncate(body.iter().position(|&b| b == b'\n').unwrap() + 1);
        body.extend_from_slice(
            br#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: leader changed","http_status":"Service Unavailable"}}"#,
        );
        let err = decode(&body, 1000).unwrap_err();
        assert!(
            matches!(&err, EtcdErrorKind::Rejected { status: 503, code: Some(14), message } if message.contains("leader changed")),
            "{err:?}"
        );
        let err = decode(b"<html>not etcd</html>\n", 100).unwrap_err();
        assert!(matches!(err, EtcdErrorKind::BadAnswer { .. }), "{err}");
        let err = decode(br#"{"result":{"blob":"!!!"}}"#, 100).unwrap_err();
        assert!(matches!(err, EtcdErrorKind::BadAnswer { .. }), "{err}");
        let mut decoder = Decoder::new();
        let err = decoder.feed(&vec![b'x'; MAX_LINE + 1]).unwrap_err();
        assert!(matches!(err, EtcdErrorKind::SnapshotDamaged { .. }), "{err}");
    }
}
