//! The lab network: one bridge in the machine's namespace (198.18.<subnet>.1/24) and per host a
//! network namespace joined to it by a veth pair whose host end is `eth0`.
//!
//! Links are made with one `ip -batch` per step, which keeps `up` fast for many hosts. IPv6
//! address generation is off on the lab's links so nothing but the lab's own IPv4 traffic ever
//! appears on them. Hosts get no default route: they can reach each other and the bridge address,
//! nothing else.

use std::fmt::Write;
use std::net::Ipv4Addr;

use super::LabError;
use super::process::{output, run, run_with_stdin};
use super::state::{HostState, State};

/// Fails when the bridge or a namespace of this lab exists already, or another interface holds an
/// address in the lab's subnet.
pub fn check_free(state: &State) -> Result<(), LabError> {
    let links = run("ip", &["-o", "link", "show"])?;
    let taken =
        |name: &str| links.lines().any(|l| l.split(": ").nth(1).is_some_and(|n| n.split('@').next() == Some(name)));
    if taken(&state.bridge) {
        return Err(LabError::InUse {
            what: format!("bridge {}", state.bridge),
            hint: format!("a lab named {} is up already; take it down with `kubeha-lab down --dir DIR`", state.name),
        });
    }
    let namespaces = run("ip", &["netns", "list"])?;
    for h in &state.hosts {
        if namespaces.lines().any(|l| l.split_whitespace().next() == Some(h.netns.as_str())) {
            return Err(LabError::InUse {
                what: format!("network namespace {}", h.netns),
                hint: format!("remove it with `ip netns del {}` if no lab uses it", h.netns),
            });
        }
    }
    let addrs = run("ip", &["-o", "-4", "addr", "show"])?;
    for line in addrs.lines() {
        let mut words = line.split_whitespace();
        let dev = words.nth(1).unwrap_or("?");
        if let Some(cidr) = words.skip_while(|w| *w != "inet").nth(1)
            && let Some(ip) = cidr.split('/').next().and_then(|a| a.parse::<Ipv4Addr>().ok())
            && ip.octets()[..3] == [198, 18, state.subnet]
        {
            return Err(LabError::InUse {
                what: format!("subnet 198.18.{}.0/24 ({ip} on {dev})", state.subnet),
                hint: "choose another --subnet".to_string(),
            });
        }
    }
    Ok(())
}

/// Creates the bridge with the lab's .1 address.
pub fn create_bridge(state: &State) -> Result<(), LabError> {
    let br = &state.bridge;
    let batch = format!(
        "link add {br} type bridge\nlink set dev {br} addrgenmode none\naddr add 198.18.{}.1/24 dev {br}\nlink set {br} up\n",
        state.subnet
    );
    run_with_stdin("ip", &["-batch", "-"], &batch).map(drop)
}

/// Creates the namespace and veth pair of each host, attached to the bridge.
pub fn create_hosts(bridge: &str, hosts: &[&HostState]) -> Result<(), LabError> {
    let mut batch = String::new();
    for h in hosts {
        let (ns, veth) = (&h.netns, &h.veth);
        let _ = write!(
            batch,
            "netns add {ns}\nlink add {veth} type veth peer name eth0 netns {ns}\n\
             link set dev {veth} addrgenmode none\nlink set {veth} master {bridge} up\n"
        );
    }
    run_with_stdin("ip", &["-batch", "-"], &batch).map(drop)
}

/// Deletes namespaces, veths and the bridge, ignoring the ones already gone. Returns the parts
/// that could not be removed.
pub fn delete(state: &State) -> Vec<String> {
    let mut batch = String::new();
    for h in state.hosts.iter().filter(|h| h.net_created) {
        let _ = writeln!(batch, "netns del {}", h.netns);
    }
    // Deleting a namespace destroys its end of the pair and with it the root end; delete the root
    // ends too in case a namespace outlived its deletion.
    for h in state.hosts.iter().filter(|h| h.net_created) {
        let _ = writeln!(batch, "link del {}", h.veth);
    }
    if state.bridge_created {
        let _ = writeln!(batch, "link del {}", state.bridge);
    }
    if !batch.is_empty() {
        // `-force` goes on past errors ("does not exist" for parts already gone).
        let _ = run_with_stdin("ip", &["-force", "-batch", "-"], &batch);
    }
    leftovers(state)
}

/// Lab parts that still exist.
pub fn leftovers(state: &State) -> Vec<String> {
    let mut left = Vec::new();
    let namespaces = output("ip", &["netns", "list"]).map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let links = output("ip", &["-o", "link", "show"]).map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let (namespaces, links) = (namespaces.unwrap_or_default(), links.unwrap_or_default());
    for h in &state.hosts {
        if namespaces.lines().any(|l| l.split_whitespace().next() == Some(h.netns.as_str())) {
            left.push(format!("network namespace {}", h.netns));
        }
    }
    let prefix = format!("{}-", state.bridge);
    for l in links.lines() {
        if let Some(name) = l.split(": ").nth(1).and_then(|n| n.split('@').next())
            && (name == state.bridge || name.starts_with(&prefix))
        {
            left.push(format!("link {name}"));
        }
    }
    left
}

/// Detaches a host's veth from the bridge: the host keeps its link but reaches nobody.
pub fn cut(host: &HostState) -> Result<(), LabError> {
    run("ip", &["link", "set", &host.veth, "nomaster"]).map(drop)
}

/// Attaches a host's veth to the bridge again.
pub fn reconnect(bridge: &str, host: &HostState) -> Result<(), LabError> {
    run("ip", &["link", "set", &host.veth, "master", bridge]).map(drop)
}

/// The processes inside a host's network namespace.
pub fn pids_in(netns: &str) -> Vec<u32> {
    output("ip", &["netns", "pids", netns])
        .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}
