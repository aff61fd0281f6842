//! The static-pod model every manifest is rendered from, with kubeadm's conventions built in.
//!
//! Component modules describe *what* runs (command, probes, mounts); `templates/static-pod.yaml.tera`
//! decides *how* it is written. Probe timings, labels, priority and the seccomp profile are the
//! values kubeadm's `staticpod` utilities use, so kubeha's manifests read like kubeadm's.

use std::collections::BTreeMap;

use serde::Serialize;

/// `system-node-critical`, written out because static pods never pass the Priority admission
/// plugin: without the number the kubelet treats them as priority 0 during graceful shutdown.
pub const SYSTEM_NODE_CRITICAL_PRIORITY: i32 = 2_000_001_000;

/// The worst-case start time kubeadm allows a control-plane component
/// (`ControlPlaneComponentHealthCheck`, four minutes); the startup probe covers it.
const COMPONENT_HEALTH_CHECK_SECONDS: u32 = 240;

/// One container in `kube-system`, run by the kubelet from `/etc/kubernetes/manifests`.
#[derive(Debug, Clone, Serialize)]
pub struct StaticPod {
    /// Pod, container and `component` label.
    pub name: String,
    pub annotations: BTreeMap<String, String>,
    pub image: String,
    /// Program name first, then every flag.
    pub command: Vec<String>,
    pub liveness_probe: Option<Probe>,
    pub readiness_probe: Option<Probe>,
    pub startup_probe: Option<Probe>,
    /// Declared container ports: only the named probe port kubeadm 1.34+ adds.
    pub ports: Vec<ContainerPort>,
    pub requests: Requests,
    /// Linux capabilities added to the container (keepalived needs to manage addresses).
    pub capabilities: Vec<&'static str>,
    /// Sorted by name, as kubeadm sorts them.
    pub volumes: Vec<HostPathVolume>,
    pub priority: i32,
}

impl StaticPod {
    pub fn new(name: &str, image: String, command: Vec<String>) -> Self {
        StaticPod {
            name: name.to_string(),
            annotations: BTreeMap::new(),
            image,
            command,
            liveness_probe: None,
            readiness_probe: None,
            startup_probe: None,
            ports: Vec::new(),
            requests: Requests::default(),
            capabilities: Vec::new(),
            volumes: Vec::new(),
            priority: SYSTEM_NODE_CRITICAL_PRIORITY,
        }
    }

    pub fn annotate(mut self, key: &str, value: String) -> Self {
        self.annotations.insert(key.to_string(), value);
        self
    }

    pub fn requests(mut self, cpu: &'static str, memory: Option<&'static str>) -> Self {
        self.requests = Requests { cpu: Some(cpu), memory };
        self
    }

    /// kubeadm 1.34+: the container declares its probes' port as [`PROBE_PORT_NAME`] and every
    /// probe refers to it by name (all of a kubeadm pod's probes use one port).
    pub fn with_named_probe_port(mut self) -> Self {
        let probes = [&mut self.liveness_probe, &mut self.readiness_probe, &mut self.startup_probe];
        let mut number = None;
        for probe in probes.into_iter().flatten() {
            if let ProbePort::Number(n) = probe.port {
                debug_assert!(number.is_none_or(|m| m == n), "{}: probes on two ports", self.name);
                number = Some(n);
            }
            probe.port = ProbePort::Name(PROBE_PORT_NAME);
        }
        if let Some(container_port) = number {
            self.ports.push(ContainerPort { name: PROBE_PORT_NAME, container_port, protocol: "TCP" });
        }
        self
    }

    /// Adds volumes and keeps them sorted by name, as kubeadm writes them.
    pub fn mount(mut self, volumes: impl IntoIterator<Item = HostPathVolume>) -> Self {
        self.volumes.extend(volumes);
        self.volumes.sort_by_key(|v| v.name);
        self
    }
}

/// The container port name kubeadm's probes use from 1.34 (`constants.ProbePort`).
pub const PROBE_PORT_NAME: &str = "probe-port";

/// A declared container port.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerPort {
    pub name: &'static str,
    pub container_port: u16,
    pub protocol: &'static str,
}

/// Where a probe connects: a port number, or the name of a declared container port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ProbePort {
    Number(u16),
    Name(&'static str),
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Requests {
    pub cpu: Option<&'static str>,
    pub memory: Option<&'static str>,
}

/// A host directory or file mounted at the same path inside the container.
#[derive(Debug, Clone, Serialize)]
pub struct HostPathVolume {
    pub name: &'static str,
    pub path: String,
    /// The hostPath `type`: `DirectoryOrCreate`, `FileOrCreate`, `File`, ...
    pub kind: &'static str,
    pub read_only: bool,
}

impl HostPathVolume {
    pub fn dir(name: &'static str, path: &str, read_only: bool) -> Self {
        HostPathVolume { name, path: path.to_string(), kind: "DirectoryOrCreate", read_only }
    }

    /// A directory kubeha writes before the pod can start: a missing one is an error, not an
    /// empty directory the kubelet created.
    pub fn existing_dir(name: &'static str, path: &str) -> Self {
        HostPathVolume { name, path: path.to_string(), kind: "Directory", read_only: true }
    }

    pub fn file_or_create(name: &'static str, path: &str, read_only: bool) -> Self {
        HostPathVolume { name, path: path.to_string(), kind: "FileOrCreate", read_only }
    }
}

/// An HTTP(S) GET or a TCP connect, with kubeadm's timings.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// `httpGet` or `tcpSocket`.
    pub handler: &'static str,
    pub host: String,
    /// Empty for `tcpSocket`.
    pub path: String,
    pub port: ProbePort,
    /// `HTTP` or `HTTPS`; empty for `tcpSocket`.
    pub scheme: &'static str,
    pub initial_delay_seconds: u32,
    pub timeout_seconds: u32,
    pub failure_threshold: u32,
    pub period_seconds: u32,
}

/// Whether a probe speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn name(self) -> &'static str {
        match self {
            Scheme::Http => "HTTP",
            Scheme::Https => "HTTPS",
        }
    }
}

impl Probe {
    /// kubeadm's `LivenessProbe`: skip one period, then restart after 8 failures in a row.
    pub fn liveness(host: &str, path: &str, port: u16, scheme: Scheme) -> Self {
        Self::http(host, path, port, scheme, 10, 8, 10)
    }

    /// kubeadm's `ReadinessProbe`: checked every second from the start.
    pub fn readiness(host: &str, path: &str, port: u16, scheme: Scheme) -> Self {
        Self::http(host, path, port, scheme, 0, 3, 1)
    }

    /// kubeadm's `StartupProbe`: enough failures to cover the whole component start timeout.
    pub fn startup(host: &str, path: &str, port: u16, scheme: Scheme) -> Self {
        let period = 10;
        Self::http(host, path, port, scheme, period, COMPONENT_HEALTH_CHECK_SECONDS.div_ceil(period), period)
    }

    /// A TCP connect with liveness timings, for components without an HTTP health endpoint.
    pub fn tcp_liveness(host: &str, port: u16) -> Self {
        Probe {
            handler: "tcpSocket",
            host: host.to_string(),
            path: String::new(),
            port: ProbePort::Number(port),
            scheme: "",
            initial_delay_seconds: 10,
            timeout_seconds: 15,
            failure_threshold: 8,
            period_seconds: 10,
        }
    }

    fn http(host: &str, path: &str, port: u16, scheme: Scheme, initial: u32, failures: u32, period: u32) -> Self {
        Probe {
            handler: "httpGet",
            host: host.to_string(),
            path: path.to_string(),
            port: ProbePort::Number(port),
            scheme: scheme.name(),
            initial_delay_seconds: initial,
            timeout_seconds: 15,
            failure_threshold: failures,
            period_seconds: period,
        }
    }
}

/// `--name=value` flags sorted by name, as kubeadm's `ArgumentsToCommand` writes them.
#[derive(Debug, Default)]
pub struct Flags(BTreeMap<&'static str, String>);

impl Flags {
    pub fn set(&mut self, name: &'static str, value: impl Into<String>) -> &mut Self {
        self.0.insert(name, value.into());
        self
    }

    /// `program` followed by the flags.
    pub fn command(&self, program: &str) -> Vec<String> {
        std::iter::once(program.to_string()).chain(self.0.iter().map(|(k, v)| format!("--{k}={v}"))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_sorted_after_the_program() {
        let mut f = Flags::default();
        f.set("secure-port", "6443").set("advertise-address", "10.0.0.1").set("allow-privileged", "true");
        assert_eq!(
            f.command("kube-apiserver"),
            ["kube-apiserver", "--advertise-address=10.0.0.1", "--allow-privileged=true", "--secure-port=6443"]
        );
    }

    #[test]
    fn startup_probe_covers_the_component_timeout() {
        let p = Probe::startup("127.0.0.1", "/livez", 6443, Scheme::Https);
        assert_eq!(p.failure_threshold * p.period_seconds, COMPONENT_HEALTH_CHECK_SECONDS);
        assert_eq!((p.initial_delay_seconds, p.timeout_seconds), (10, 15));
    }

    #[test]
    fn a_named_probe_port_replaces_the_number_everywhere() {
        let mut pod = StaticPod::new("kube-scheduler", "img".into(), vec!["kube-scheduler".into()]);
        pod.liveness_probe = Some(Probe::liveness("127.0.0.1", "/livez", 10259, Scheme::Https));
        pod.startup_probe = Some(Probe::startup("127.0.0.1", "/livez", 10259, Scheme::Https));
        let pod = pod.with_named_probe_port();
        assert_eq!(pod.liveness_probe.unwrap().port, ProbePort::Name(PROBE_PORT_NAME));
        assert_eq!(pod.startup_probe.unwrap().port, ProbePort::Name(PROBE_PORT_NAME));
        assert_eq!(pod.ports.len(), 1);
        assert_eq!(
            (pod.ports[0].name, pod.ports[0].container_port, pod.ports[0].protocol),
            ("probe-port", 10259, "TCP")
        );
    }
}
