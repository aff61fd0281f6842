//! Changing a running cluster's membership: what the cluster really is (the etcd member list
//! and the host markers, not the inventory alone), the refusals that keep quorum, and the etcd
//! steps `join-node` and `remove-node` share (a learner added, caught up and promoted; a member
//! removed).
//!
//! etcd is asked through the SSH tunnel to a running member's loopback, as the apiserver's etcd
//! client (`apiserver-etcd-client`, the identity kubeadm uses to change membership); no etcdctl
//! is needed on the hosts. Every judgement is a pure function of the member list and the plan,
//! so each rule is tested without a host.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use super::checks::{Check, Status};
use super::error::ActionError;
use super::preflight::Outcome;
use super::session::Session;
use crate::host::etcd::{EtcdClient, EtcdError, EtcdErrorKind, Member};
use crate::host::facts::Ownership;
use crate::host::layout::ETCD_PEER_PORT;
use crate::https::TlsClient;
use crate::pki::Pki;
use crate::plan::{EtcdInitial, Host, Plan, Role, join_host_port};
use crate::transport::Remote;

/// `https://<address>:2380`: how etcd knows a member before it has a name.
pub fn peer_url(host: &Host) -> String {
    format!("https://{}", join_host_port(host.address, ETCD_PEER_PORT))
}

/// Where a host stands in etcd's member list (matched by peer URL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// A voting member.
    Voting { id: u64 },
    /// Added as a learner (by a join that may not have finished); `started` once it runs.
    Learner { id: u64, started: bool },
    /// Not in the member list.
    Absent,
}

pub fn standing(members: &[Member], host: &Host) -> Standing {
    let url = peer_url(host);
    match members.iter().find(|m| m.peer_urls.contains(&url)) {
        Some(m) if m.is_learner => Standing::Learner { id: m.id, started: m.is_started() },
        Some(m) => Standing::Voting { id: m.id },
        None => Standing::Absent,
    }
}

/// The hosts a membership change works on: every control plane (etcd members, load balancers,
/// apiservers) and the named hosts. Other workers are left alone, not even connected to: a
/// worker's files do not depend on the members (the render guarantees it), so joining or
/// removing a host changes nothing on them.
pub fn scope(plan: &Plan, names: &[String]) -> Plan {
    plan.with_hosts(|h| h.role == Role::ControlPlane || names.contains(&h.name))
}

/// The cluster as it runs: the inventory's control planes that are etcd voting members, the
/// workers whose marker says they belong to it, plus `joining` (hosts being added now).
pub fn running_plan(plan: &Plan, members: &[Member], found: &Outcome, joining: &[String]) -> Plan {
    plan.with_hosts(|h| {
        joining.contains(&h.name)
            || match h.role {
                Role::ControlPlane => matches!(standing(members, h), Standing::Voting { .. }),
                Role::Worker => matches!(found.hosts.get(&h.name), Some((_, Ownership::Ours(_)))),
            }
    })
}

/// The members etcd lists that no inventory control plane accounts for (by peer URL).
pub fn strangers<'m>(plan: &Plan, members: &'m [Member]) -> Vec<&'m Member> {
    members.iter().filter(|m| !plan.control_planes().any(|h| m.peer_urls.contains(&peer_url(h)))).collect()
}

/// How a member is called in messages: its name, else its peer URL.
pub fn describe(member: &Member) -> String {
    match (member.name.as_str(), member.peer_urls.first()) {
        ("", Some(url)) => format!("an unstarted member at {url}"),
        (name, _) => name.to_string(),
    }
}

/// `--initial-cluster` for `joining` as it starts against `members` (which include it, as a
/// learner): every member's name and peer URL. A member other than `joining` that has not
/// started has no name yet; etcd would refuse the list, so it is an error naming it.
pub fn initial_cluster(members: &[Member], joining: &Host) -> Result<EtcdInitial, String> {
    let own = peer_url(joining);
    let mut entries = Vec::new();
    for m in members {
        if m.peer_urls.contains(&own) {
            entries.push(format!("{}={own}", joining.name));
        } else if m.is_started() {
            entries.extend(m.peer_urls.iter().map(|u| format!("{}={u}", m.name)));
        } else {
            return Err(format!("etcd lists {} that never started; finish or undo that join first", describe(m)));
        }
    }
    if !members.iter().any(|m| m.peer_urls.contains(&own)) {
        entries.push(format!("{}={own}", joining.name));
    }
    Ok(EtcdInitial { cluster: entries.join(","), state: "existing".into() })
}

/// How many of `voting` members must agree for etcd to work.
pub fn quorum(voting: usize) -> usize {
    voting / 2 + 1
}

/// The refusal of an even member count at the end of a change, unless allowed.
pub fn even_refusal(after: usize, allow_even: bool) -> Option<String> {
    (after.is_multiple_of(2) && after > 0 && !allow_even).then(|| {
        format!(
            "the cluster would end with {after} etcd members: an even count tolerates no more failures than {} \
             (both lose quorum after {} failure(s)) and needs a larger quorum ({} instead of {}); add or remove one \
             more control plane, or pass --allow-even-members",
            after - 1,
            (after - 1) / 2,
            quorum(after),
            quorum(after - 1)
        )
    })
}

/// The cluster-wide rows of a membership change: etcd members the inventory does not know and
/// learners of joins that did not finish (other than `joining`, which are resumed).
pub fn member_checks(plan: &Plan, members: &[Member], joining: &[String]) -> Vec<Check> {
    let mut rows = Vec::new();
    for m in strangers(plan, members) {
        rows.push(Check::new(
            "cluster",
            "etcd members",
            Status::Fail,
            format!(
                "etcd has member {} ({}) that is not a control plane of the inventory: add it back to the \
                 inventory and remove it with `kubeha remove-node`",
                describe(m),
                m.peer_urls.join(", ")
            ),
        ));
    }
    for h in plan.control_planes().filter(|h| !joining.contains(&h.name)) {
        if let Standing::Learner { .. } = standing(members, h) {
            rows.push(Check::new(
                &h.name,
                "etcd member",
                Status::Fail,
                format!(
                    "is an etcd learner of a join that did not finish: run `kubeha join-node {0}` to finish it or \
                     `kubeha remove-node {0}` to undo it",
                    h.name
                ),
            ));
        }
    }
    rows
}

/// etcd's membership calls, as the apiserver's etcd client.
pub struct Etcd {
    tls: TlsClient,
    interval: Duration,
}

impl Etcd {
    pub fn new(pki: &Pki, interval: Duration) -> Result<Etcd, ActionError> {
        let identity =
            pki.apiserver_etcd_client().identity("apiserver-etcd-client.crt", "apiserver-etcd-client.key")?;
        let tls = TlsClient::new(pki.etcd_ca_cert_pem(), Some(&identity))?.with_timeout(Duration::from_secs(10));
        Ok(Etcd { tls, interval })
    }

    pub fn client<'r, R: Remote>(&self, remote: &'r R, host: &Host) -> EtcdClient<'r, R> {
        EtcdClient::with_tls(remote, host, self.tls.clone())
    }

    /// The member list from the first of `plan`'s connected control planes that answers, and
    /// which host answered.
    pub async fn members<'s, R: Remote>(
        &self,
        session: &'s Session<'_, R>,
        plan: &Plan,
        except: &[String],
    ) -> Result<(&'s Host, &'s R, Vec<Member>), ActionError> {
        let mut last = None;
        for (host, remote) in session.control_planes() {
            if plan.host(&host.name).is_none() || except.contains(&host.name) {
                continue;
            }
            match self.client(remote, host).members().await {
                Ok(members) => return Ok((host, remote, members)),
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e) => e.into(),
            None => ActionError::Membership {
                host: "cluster".into(),
                step: "reading the etcd member list".into(),
                detail: "no running control plane of this cluster is connected".into(),
            },
        })
    }

    /// Adds `host` as a learner through `via`, unless it is one already (a join cut short after
    /// the member was added): returns its id and the member list including it.
    pub async fn add_learner<R: Remote>(
        &self,
        via: (&Host, &R),
        host: &Host,
        members: Vec<Member>,
    ) -> Result<(u64, Vec<Member>), ActionError> {
        match standing(&members, host) {
            Standing::Learner { id, .. } | Standing::Voting { id } => Ok((id, members)),
            Standing::Absent => {
                let added = self.client(via.1, via.0).add_learner(&[peer_url(host)]).await?;
                Ok((added.member.id, added.members))
            }
        }
    }

    /// Removes member `id` through `via`; a member already gone is fine (a re-run).
    pub async fn remove<R: Remote>(&self, via: (&Host, &R), id: u64) -> Result<(), ActionError> {
        match self.client(via.1, via.0).remove(id).await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.kind(), EtcdErrorKind::MemberNotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The two calls the catch-up loop makes, apart so the loop is tested without etcd.
pub trait Promoter {
    /// How far the learner's log is behind the leader's, for progress (None: unknown yet).
    fn lag(&self) -> impl Future<Output = Result<Option<(u64, u64)>, String>>;
    fn promote(&self) -> impl Future<Output = Result<(), EtcdError>>;
}

/// Promotes the learner once it has caught up: polls, and retries the promotion while etcd
/// says the learner is not in sync yet, until `deadline`; then fails naming the host, the step
/// and how far behind it was.
pub async fn promote_when_caught_up<P: Promoter>(
    promoter: &P,
    host: &str,
    deadline: Instant,
    interval: Duration,
    on_wait: impl Fn(&str),
) -> Result<(), ActionError> {
    let started = Instant::now();
    loop {
        let lag = promoter.lag().await;
        let last = match promoter.promote().await {
            Ok(()) => return Ok(()),
            Err(e) if matches!(e.kind(), EtcdErrorKind::NotALearner) => return Ok(()),
            Err(e) if e.is_retryable() => e.to_string(),
            Err(e) => return Err(e.into()),
        };
        let progress = match lag {
            Ok(Some((learner, leader))) => format!("learner at raft index {learner}, leader at {leader}"),
            Ok(None) => "its etcd has not answered yet".to_string(),
            Err(e) => format!("its etcd does not answer yet ({e})"),
        };
        on_wait(&format!("waiting for the learner to catch up: {progress}"));
        if Instant::now() + interval >= deadline {
            return Err(ActionError::Membership {
                host: host.to_string(),
                step: "promoting its etcd learner".into(),
                detail: format!(
                    "it did not catch up with the leader within {}s ({progress}; last answer: {last}); \
                     see its etcd log, then re-run the command: the learner is reused",
                    started.elapsed().as_secs()
                ),
            });
        }
        tokio::time::sleep(interval).await;
    }
}

/// The real [`Promoter`]: the learner's status through its own host, the leader's through
/// `via`, the promotion through `via`.
pub struct EtcdPromoter<'a, R: Remote> {
    pub etcd: &'a Etcd,
    pub via: (&'a Host, &'a R),
    pub learner: (&'a Host, &'a R),
    pub id: u64,
}

impl<R: Remote> Promoter for EtcdPromoter<'_, R> {
    async fn lag(&self) -> Result<Option<(u64, u64)>, String> {
        let learner = self.etcd.client(self.learner.1, self.learner.0).status().await.map_err(|e| e.to_string())?;
        let leader = self.etcd.client(self.via.1, self.via.0).status().await.map_err(|e| e.to_string())?;
        Ok(Some((learner.raft_applied_index, leader.raft_index)))
    }

    async fn promote(&self) -> Result<(), EtcdError> {
        self.etcd.client(self.via.1, self.via.0).promote(self.id).await.map(|_| ())
    }
}

impl Etcd {
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

/// Per host, the members of `plan` whose health was checked, as preflight rows: the rest of
/// the cluster must be healthy before its membership changes.
pub async fn health_rows<R: Remote>(
    session: &Session<'_, R>,
    plan: &Plan,
    health: &super::wait::Health<'_>,
    skip: &[String],
) -> Vec<Check> {
    let hosts: Vec<(&Host, &R)> =
        session.control_planes().filter(|(h, _)| plan.host(&h.name).is_some() && !skip.contains(&h.name)).collect();
    let results = session.each(&hosts, |(host, remote)| async move { health.now(host, *remote).await }).await;
    let mut rows: Vec<Check> = results
        .into_iter()
        .map(|((host, _), result)| match result {
            Ok(()) => Check::new(&host.name, "health", Status::Ok, "etcd and kube-apiserver healthy"),
            Err(e) => Check::new(
                &host.name,
                "health",
                Status::Fail,
                format!("{e}: the cluster must be healthy before its membership changes"),
            ),
        })
        .collect();
    let connected: BTreeMap<&str, ()> = session.connected().map(|(h, _)| (h.name.as_str(), ())).collect();
    for h in plan.control_planes().filter(|h| !connected.contains_key(h.name.as_str()) && !skip.contains(&h.name)) {
        rows.push(Check::new(&h.name, "health", Status::Fail, "not reachable: the cluster must be healthy first"));
    }
    rows
}

/// Gates that hand the VIP over before its holder's load balancer restarts: the holder's
/// keepalived is stopped (it announces priority 0, and a peer, already rolled, takes the VIP at
/// once) and kubeha waits until another control plane of the plan holds the VIP and the
/// endpoint answers through it; only then is
/// the holder written, so its haproxy and keepalived restart while it serves nothing (without
/// this, its haproxy could stop while it still held the VIP). Its keepalived comes back as a
/// backup (`nopreempt`), written by the rollout or, if its manifest did not change, put back
/// after the host is healthy.
pub struct HandOver<'a> {
    pub inner: &'a super::wait::Health<'a>,
    pub plan: &'a Plan,
    /// The hosts that hold the VIP now.
    pub holders: Vec<String>,
    /// What the rollout writes, per host.
    pub files: &'a BTreeMap<String, Vec<crate::files::File>>,
}

impl HandOver<'_> {
    fn manifest(&self, host: &str, pod: &str) -> Option<&crate::files::File> {
        let path = crate::host::layout::manifest(pod);
        self.files.get(host)?.iter().find(|f| f.path == std::path::Path::new(&path))
    }
}

impl<R: Remote> super::rollout::Gates<R> for HandOver<'_> {
    async fn before(&self, session: &Session<'_, R>, host: &Host) -> Result<(), ActionError> {
        self.inner.before(session, host).await?;
        if !self.holders.contains(&host.name) {
            return Ok(());
        }
        let Some((_, remote)) = session.connected().find(|(h, _)| h.name == host.name) else { return Ok(()) };
        let lb: Vec<&crate::files::File> =
            ["haproxy", "keepalived"].iter().filter_map(|pod| self.manifest(&host.name, pod)).collect();
        let paths: Vec<std::path::PathBuf> = lb.iter().map(|f| f.path.clone()).collect();
        let states = remote.file_states(&paths).await.map_err(|e| ActionError::host("comparing files", e))?;
        let restarts = lb.iter().zip(&states).any(|(f, s)| s.as_ref().is_none_or(|s| s.sha256 != f.sha256()));
        if !restarts {
            return Ok(());
        }
        session.progress.step(&host.name, "handing the VIP over before its load balancer restarts");
        let keepalived = std::path::PathBuf::from(crate::host::layout::manifest("keepalived"));
        let stop = crate::host::cleanup::Cleanup { manifests: vec![keepalived], ..Default::default() };
        stop.run(remote).await.map_err(|e| ActionError::host("stopping keepalived", e))?;
        wait_vip_elsewhere(session, self.plan, &host.name).await?;
        // And the endpoint answers through its new holder (from here, as clients reach it).
        self.inner.endpoint(Instant::now() + session.options.wait.timeout, session.progress).await?;
        Ok(())
    }

    async fn after(&self, session: &Session<'_, R>, host: &Host, remote: &R) -> Result<(), ActionError> {
        self.inner.after(session, host, remote).await?;
        if let Some(file) = self.manifest(&host.name, "keepalived").filter(|_| self.holders.contains(&host.name)) {
            let state = remote.file_states(std::slice::from_ref(&file.path)).await;
            if matches!(state.as_deref(), Ok([None])) {
                remote.put(file).await.map_err(|e| ActionError::host("writing files", e))?;
            }
        }
        Ok(())
    }
}

/// The connected control planes that hold the VIP now (asked afresh: an earlier step of the
/// same run may have moved it).
pub async fn vip_holders<R: Remote>(session: &Session<'_, R>) -> Vec<String> {
    let crate::plan::LoadBalancer::KeepalivedHaproxy { vip, .. } = &session.plan.load_balancer else {
        return Vec::new();
    };
    let cps: Vec<(&Host, &R)> = session.control_planes().collect();
    let found = session.each(&cps, |(_, remote)| crate::host::facts::addresses(*remote)).await;
    found
        .into_iter()
        .filter(|(_, addresses)| addresses.as_ref().is_ok_and(|a| a.contains(vip)))
        .map(|((h, _), _)| h.name.clone())
        .collect()
}

/// Until a connected control plane of `plan` other than `leaving` holds the VIP.
pub async fn wait_vip_elsewhere<R: Remote>(
    session: &Session<'_, R>,
    plan: &Plan,
    leaving: &str,
) -> Result<(), super::wait::WaitError> {
    let crate::plan::LoadBalancer::KeepalivedHaproxy { vip, .. } = &plan.load_balancer else { return Ok(()) };
    let deadline = Instant::now() + session.options.wait.timeout;
    let others: Vec<(&Host, &R)> =
        session.control_planes().filter(|(h, _)| h.name != leaving && plan.host(&h.name).is_some()).collect();
    super::wait::until(
        &format!("the VIP {vip} to move away from {leaving}"),
        deadline,
        Duration::from_millis(200),
        || async {
            for (_, remote) in &others {
                if let Ok(addresses) = crate::host::facts::addresses(*remote).await
                    && addresses.contains(vip)
                {
                    return Ok(());
                }
            }
            Err(super::wait::Failure::Retry("no other control plane holds it yet".into()))
        },
        |last| session.progress.detail(leaving, last),
    )
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn plan() -> Plan {
        let text = crate::actions::fake::INVENTORY.replace(
            "    - {name: w1,",
            "    - {name: cp4, address: 198.18.0.14, role: control-plane}\n    \
             - {name: cp5, address: 198.18.0.15, role: control-plane}\n    - {name: w1,",
        );
        crate::inventory::parse(&text, std::path::Path::new("/")).unwrap()
    }

    fn member(id: u64, name: &str, n: u8, learner: bool) -> Member {
        Member {
            id,
            name: name.into(),
            peer_urls: vec![format!("https://198.18.0.1{n}:2380")],
            client_urls: vec![],
            is_learner: learner,
        }
    }

    #[test]
    fn the_running_cluster_and_a_joining_members_start_come_from_etcd() {
        let plan = plan();
        let members = vec![member(1, "cp1", 1, false), member(2, "cp2", 2, false), member(3, "cp3", 3, false)];
        assert_eq!(standing(&members, plan.host("cp2").unwrap()), Standing::Voting { id: 2 });
        assert_eq!(standing(&members, plan.host("cp4").unwrap()), Standing::Absent);
        let running = running_plan(&plan, &members, &Outcome::default(), &["cp4".into()]);
        let names: Vec<&str> = running.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["cp1", "cp2", "cp3", "cp4"], "w1 has no marker: not part of it");

        let mut with_learner = members.clone();
        with_learner.push(member(9, "", 4, true));
        let cp4 = plan.host("cp4").unwrap();
        assert_eq!(standing(&with_learner, cp4), Standing::Learner { id: 9, started: false });
        let initial = initial_cluster(&with_learner, cp4).unwrap();
        assert_eq!(initial.state, "existing");
        assert_eq!(
            initial.cluster,
            "cp1=https://198.18.0.11:2380,cp2=https://198.18.0.12:2380,cp3=https://198.18.0.13:2380,\
             cp4=https://198.18.0.14:2380"
        );
        // Another host's unstarted member cannot be named: refused.
        let err = initial_cluster(&with_learner, plan.host("cp5").unwrap()).unwrap_err();
        assert!(err.contains("unstarted member at https://198.18.0.14:2380"), "{err}");
    }

    #[test]
    fn stale_learners_and_unknown_members_are_refused_with_what_to_do() {
        let plan = plan();
        let members = vec![
            member(1, "cp1", 1, false),
            member(2, "cp2", 2, false),
            member(3, "cp3", 3, false),
            member(9, "", 4, true),
            member(7, "old", 9, false),
        ];
        let rows = member_checks(&plan, &members, &["cp5".into()]);
        let text: Vec<String> = rows.iter().map(|r| format!("{} {}", r.host, r.detail)).collect();
        assert_eq!(rows.len(), 2, "{text:?}");
        assert!(text[0].contains("member old (https://198.18.0.19:2380) that is not a control plane"), "{text:?}");
        assert!(text[1].starts_with("cp4 ") && text[1].contains("kubeha join-node cp4"), "{text:?}");
        // Joining cp4 resumes its learner: no refusal for it.
        let rows = member_checks(&plan.with_hosts(|h| h.name != "x"), &members[..4], &["cp4".into()]);
        assert!(rows.is_empty(), "{rows:?}");
    }

    #[test]
    fn even_member_counts_are_refused_with_the_reason() {
        assert_eq!(even_refusal(5, false), None);
        assert_eq!(even_refusal(4, true), None);
        let why = even_refusal(4, false).unwrap();
        assert!(why.contains("4 etcd members") && why.contains("tolerates no more failures than 3"), "{why}");
        assert!(why.contains("quorum (3 instead of 2)") && why.contains("--allow-even-members"), "{why}");
        assert_eq!((quorum(1), quorum(3), quorum(4), quorum(5), quorum(7)), (1, 2, 3, 3, 4));
    }

    struct Fake {
        not_ready: Mutex<usize>,
        promoted: Mutex<usize>,
    }

    impl Promoter for Fake {
        async fn lag(&self) -> Result<Option<(u64, u64)>, String> {
            Ok(Some((10, 20)))
        }
        async fn promote(&self) -> Result<(), EtcdError> {
            let mut left = self.not_ready.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                return Err(EtcdError {
                    host: "cp1".into(),
                    op: crate::host::etcd::EtcdOp::Promote { id: 9 },
                    kind: EtcdErrorKind::LearnerNotReady,
                });
            }
            *self.promoted.lock().unwrap() += 1;
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_learner_is_promoted_once_etcd_says_it_caught_up_and_not_waited_for_forever() {
        let fake = Fake { not_ready: Mutex::new(3), promoted: Mutex::new(0) };
        let waits = Mutex::new(Vec::new());
        let deadline = Instant::now() + Duration::from_secs(5);
        promote_when_caught_up(&fake, "cp4", deadline, Duration::from_millis(5), |m| {
            waits.lock().unwrap().push(m.to_string())
        })
        .await
        .unwrap();
        assert_eq!(*fake.promoted.lock().unwrap(), 1);
        assert_eq!(waits.lock().unwrap().len(), 3);
        assert!(waits.lock().unwrap()[0].contains("learner at raft index 10, leader at 20"));

        let never = Fake { not_ready: Mutex::new(usize::MAX), promoted: Mutex::new(0) };
        let deadline = Instant::now() + Duration::from_millis(40);
        let err = promote_when_caught_up(&never, "cp4", deadline, Duration::from_millis(5), |_| {}).await.unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("cp4: promoting its etcd learner: it did not catch up"), "{text}");
        assert!(text.contains("the learner is reused"), "{text}");
    }
}
