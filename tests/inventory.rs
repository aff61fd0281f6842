//! `kubeha validate` against good and bad inventories, through the built binary: every bad
//! inventory must fail with exit code 2 and a message naming the field and the reason.

use std::path::Path;
use std::process::Command;

const GOOD: &str = "\
apiVersion: kubeha/v1alpha1
kind: Cluster
metadata: {name: lab}
spec:
  kubernetesVersion: v1.31.4
  controlPlaneEndpoint: 198.18.0.10:8443
  loadBalancer: {type: keepalived-haproxy, vip: 198.18.0.10, interface: eth0}
  networking: {podSubnet: 10.244.0.0/16, serviceSubnet: 10.96.0.0/12, dnsDomain: cluster.local}
  etcd: {version: 3.5.16-0}
  certificates: {keyAlgorithm: ecdsa-p256}
  ssh: {user: root, port: 22, identityFile: ~/.ssh/id_ed25519, knownHostsFile: ~/.ssh/known_hosts}
  hosts:
    - {name: cp1, address: 198.18.0.11, role: control-plane}
    - {name: cp2, address: 198.18.0.12, role: control-plane}
    - {name: cp3, address: 198.18.0.13, role: control-plane}
    - {name: w1,  address: 198.18.0.21, role: worker, ssh: {user: ops}}
";

/// A bad inventory: text replacements applied to `GOOD`, and what the errors must say.
struct Case {
    name: &'static str,
    edits: &'static [(&'static str, &'static str)],
    expect: &'static [&'static str],
}

const CP3: &str = "    - {name: cp3, address: 198.18.0.13, role: control-plane}\n";

const CASES: &[Case] = &[
    Case {
        name: "unknown top-level field",
        edits: &[("kind: Cluster\n", "kind: Cluster\nstatus: {}\n")],
        expect: &["status: unknown field"],
    },
    Case {
        name: "misspelt host field with a suggestion",
        edits: &[("{name: cp1, address:", "{name: cp1, adress:")],
        expect: &[
            "spec.hosts[0].adress: unknown field; did you mean \"address\"?",
            "spec.hosts[0].address: is required",
        ],
    },
    Case {
        name: "wrong apiVersion",
        edits: &[("kubeha/v1alpha1", "kubeha/v2")],
        expect: &["apiVersion: \"kubeha/v2\" is not supported; use \"kubeha/v1alpha1\""],
    },
    Case { name: "wrong kind", edits: &[("kind: Cluster", "kind: Pod")], expect: &["kind: \"Pod\" is not supported"] },
    Case {
        name: "version without the leading v",
        edits: &[("v1.31.4", "1.31.4")],
        expect: &["spec.kubernetesVersion: \"1.31.4\" is not a version like v1.31.4"],
    },
    Case {
        name: "unsupported Kubernetes minor",
        edits: &[("v1.31.4", "v1.40.0")],
        expect: &["spec.kubernetesVersion: v1.40.0 is not supported: kubeha renders Kubernetes v1.31.x to v1.36.x"],
    },
    Case {
        name: "end-of-life Kubernetes minor",
        edits: &[("v1.31.4", "v1.30.9")],
        expect: &["spec.kubernetesVersion: v1.30.9 is not supported", "--allow-unsupported-version"],
    },
    Case {
        name: "bad etcd version",
        edits: &[("3.5.16-0", "latest")],
        expect: &["spec.etcd.version: \"latest\" is not an etcd version like 3.5.16-0"],
    },
    Case {
        name: "bad host address",
        edits: &[("198.18.0.12,", "198.18.0.300,")],
        expect: &["spec.hosts[1].address: \"198.18.0.300\" is not an IP address"],
    },
    Case {
        name: "loopback host address",
        edits: &[("198.18.0.12,", "127.0.0.1,")],
        expect: &["spec.hosts[1].address: 127.0.0.1 cannot be a host address"],
    },
    Case {
        name: "bad CIDR",
        edits: &[("podSubnet: 10.244.0.0/16", "podSubnet: 10.244.0.0/33")],
        expect: &["spec.networking.podSubnet: \"10.244.0.0/33\" is not a CIDR"],
    },
    Case {
        name: "CIDR with host bits",
        edits: &[("podSubnet: 10.244.0.0/16", "podSubnet: 10.244.1.0/16")],
        expect: &["spec.networking.podSubnet: 10.244.1.0/16 has host bits set; did you mean 10.244.0.0/16?"],
    },
    Case {
        name: "duplicate host names",
        edits: &[("{name: cp2,", "{name: cp1,")],
        expect: &["spec.hosts[1].name: \"cp1\" is already the name of spec.hosts[0]"],
    },
    Case {
        name: "duplicate addresses",
        edits: &[("198.18.0.21,", "198.18.0.13,")],
        expect: &["spec.hosts[3].address: 198.18.0.13 is already the address of spec.hosts[2]"],
    },
    Case {
        name: "even number of control planes",
        edits: &[(CP3, "")],
        expect: &["spec.hosts: has 2 control planes: stacked etcd needs an odd number", "allowEvenMemberCount"],
    },
    Case {
        name: "no control plane",
        edits: &[
            ("role: control-plane}", "role: worker}"),
            ("role: control-plane}", "role: worker}"),
            ("role: control-plane}", "role: worker}"),
        ],
        expect: &["spec.hosts: has no host with role control-plane"],
    },
    Case {
        name: "unknown role",
        edits: &[("role: worker,", "role: master,")],
        expect: &["spec.hosts[3].role: \"master\" is not one of control-plane, worker"],
    },
    Case {
        name: "VIP is a host address",
        edits: &[("vip: 198.18.0.10", "vip: 198.18.0.12"), ("198.18.0.10:8443", "198.18.0.12:8443")],
        expect: &["spec.loadBalancer.vip: 198.18.0.12 is the address of spec.hosts[1] (cp2)"],
    },
    Case {
        name: "VIP inside the service subnet",
        edits: &[("vip: 198.18.0.10", "vip: 10.96.0.10"), ("198.18.0.10:8443", "10.96.0.10:8443")],
        expect: &["spec.loadBalancer.vip: 10.96.0.10 is inside spec.networking.serviceSubnet 10.96.0.0/12"],
    },
    Case {
        name: "VIP inside the pod subnet",
        edits: &[("vip: 198.18.0.10", "vip: 10.244.3.3"), ("198.18.0.10:8443", "10.244.3.3:8443")],
        expect: &["spec.loadBalancer.vip: 10.244.3.3 is inside spec.networking.podSubnet 10.244.0.0/16"],
    },
    Case {
        name: "overlapping pod and service subnets",
        edits: &[("podSubnet: 10.244.0.0/16", "podSubnet: 10.96.0.0/16")],
        expect: &["spec.networking.podSubnet: 10.96.0.0/16 overlaps serviceSubnet 10.96.0.0/12"],
    },
    Case {
        name: "host inside the pod subnet",
        edits: &[("198.18.0.21,", "10.244.0.21,")],
        expect: &["spec.hosts[3].address: 10.244.0.21 is inside spec.networking.podSubnet 10.244.0.0/16"],
    },
    Case {
        name: "SSH port out of range",
        edits: &[("port: 22,", "port: 70000,")],
        expect: &["spec.ssh.port: 70000 is out of range 1-65535"],
    },
    Case {
        name: "SSH port zero on one host",
        edits: &[("ssh: {user: ops}", "ssh: {user: ops, port: 0}")],
        expect: &["spec.hosts[3].ssh.port: 0 is out of range 1-65535"],
    },
    Case {
        name: "SSH port not a number",
        edits: &[("port: 22,", "port: ssh,")],
        expect: &["spec.ssh.port: must be a whole number from 1 to 65535, found a string (\"ssh\")"],
    },
    Case {
        name: "endpoint port collides with the apiserver port",
        edits: &[("198.18.0.10:8443", "198.18.0.10:6443")],
        expect: &["spec.controlPlaneEndpoint: port 6443 is also kube-apiserver's bindPort"],
    },
    Case {
        name: "endpoint port is the etcd client port",
        edits: &[("198.18.0.10:8443", "198.18.0.10:2379")],
        expect: &["spec.controlPlaneEndpoint: port 2379 is the etcd client port"],
    },
    Case {
        name: "endpoint port is haproxy's statistics port",
        edits: &[("198.18.0.10:8443", "198.18.0.10:8404")],
        expect: &["spec.controlPlaneEndpoint: port 8404 is haproxy's statistics port on the control planes"],
    },
    Case {
        name: "endpoint is not the VIP",
        edits: &[("198.18.0.10:8443", "198.18.0.9:8443")],
        expect: &["spec.controlPlaneEndpoint: host 198.18.0.9 is not the VIP 198.18.0.10"],
    },
    Case {
        name: "endpoint without a port",
        edits: &[("198.18.0.10:8443", "198.18.0.10")],
        expect: &["spec.controlPlaneEndpoint: \"198.18.0.10\" needs a port"],
    },
    Case {
        name: "unknown load balancer type",
        edits: &[("type: keepalived-haproxy", "type: metallb")],
        expect: &["spec.loadBalancer.type: \"metallb\" is not one of keepalived-haproxy, external, dns"],
    },
    Case {
        name: "dns load balancer with an address endpoint",
        edits: &[("{type: keepalived-haproxy, vip: 198.18.0.10, interface: eth0}", "{type: dns}"), (":8443", ":6443")],
        expect: &["spec.controlPlaneEndpoint: 198.18.0.10 is an address, but loadBalancer type dns needs a DNS name"],
    },
    Case {
        name: "VIP given for an external load balancer",
        edits: &[("type: keepalived-haproxy, vip: 198.18.0.10, interface: eth0", "type: external, vip: 198.18.0.10")],
        expect: &["spec.loadBalancer.vip: does not apply to type external"],
    },
    Case {
        name: "unknown key algorithm",
        edits: &[("keyAlgorithm: ecdsa-p256", "keyAlgorithm: dsa")],
        expect: &["spec.certificates.keyAlgorithm: \"dsa\" is not one of ecdsa-p256, rsa-2048, rsa-3072, rsa-4096"],
    },
    Case {
        name: "leaf validity longer than the CA's",
        edits: &[("keyAlgorithm: ecdsa-p256", "keyAlgorithm: ecdsa-p256, validity: 20y")],
        expect: &["spec.certificates.validity: ", "is longer than caValidity 3650d"],
    },
    Case {
        name: "non-root user without sudo",
        edits: &[("ssh: {user: ops}", "ssh: {user: ops, sudo: false}")],
        expect: &["spec.hosts[3].ssh.sudo: user \"ops\" is not root, so kubeha needs passwordless sudo"],
    },
    Case {
        name: "upper-case host name",
        edits: &[("{name: cp1,", "{name: CP1,")],
        expect: &["spec.hosts[0].name: \"CP1\" is not a valid node name"],
    },
    Case {
        name: "bad extra SAN",
        edits: &[(
            "keyAlgorithm: ecdsa-p256",
            "keyAlgorithm: ecdsa-p256, extraSANs: [\"api.example.com\", \"bad name\"]",
        )],
        expect: &["spec.certificates.extraSANs[1]: \"bad name\" is not a valid DNS name"],
    },
    Case {
        name: "an interface name that would break keepalived.conf",
        edits: &[("interface: eth0}", "interface: \"eth0\\n}\\nvrrp_script x {\"}")],
        expect: &["spec.loadBalancer.interface: \"eth0\\n}\\nvrrp_script x {\" is not a network interface name"],
    },
    Case {
        name: "hosts is not a list",
        edits: &[("  hosts:\n", "  hosts: cp1\n  oldHosts:\n")],
        expect: &["spec.hosts: must be a list, found a string", "spec.oldHosts: unknown field"],
    },
    Case {
        name: "IPv6 VIP with IPv4 hosts",
        edits: &[("vip: 198.18.0.10", "vip: 'fd00::10'"), ("198.18.0.10:8443", "'[fd00::10]:8443'")],
        expect: &[
            "spec.loadBalancer.vip: fd00::10 is IPv6, but spec.hosts[0].address 198.18.0.11 is IPv4",
            "single-stack",
        ],
    },
    Case {
        name: "hosts of two address families",
        edits: &[("198.18.0.12,", "'fd00::12',")],
        expect: &["spec.hosts[1].address: fd00::12 is IPv6, but spec.hosts[0].address 198.18.0.11 is IPv4"],
    },
    Case {
        name: "IPv6 pod subnet with an IPv4 service subnet",
        edits: &[("podSubnet: 10.244.0.0/16", "podSubnet: 'fd00:10:244::/56'")],
        expect: &["spec.networking.podSubnet: fd00:10:244::/56 is IPv6, but spec.hosts[0].address 198.18.0.11 is IPv4"],
    },
    Case {
        name: "IPv6 service subnet in an IPv4 cluster",
        edits: &[("serviceSubnet: 10.96.0.0/12", "serviceSubnet: 'fd00:10:96::/112'")],
        expect: &["spec.networking.serviceSubnet: fd00:10:96::/112 is IPv6"],
    },
    Case {
        name: "IPv6 endpoint of an external balancer in an IPv4 cluster",
        edits: &[
            ("{type: keepalived-haproxy, vip: 198.18.0.10, interface: eth0}", "{type: external}"),
            ("198.18.0.10:8443", "'[fd00::10]:6443'"),
        ],
        expect: &["spec.controlPlaneEndpoint: fd00::10 is IPv6, but spec.hosts[0].address 198.18.0.11 is IPv4"],
    },
    Case {
        name: "loopback VIP",
        edits: &[("vip: 198.18.0.10", "vip: 127.0.0.1"), ("198.18.0.10:8443", "127.0.0.1:8443")],
        expect: &["spec.loadBalancer.vip: 127.0.0.1 cannot be the VIP: it is a loopback address"],
    },
    Case {
        name: "unspecified VIP",
        edits: &[("vip: 198.18.0.10", "vip: 0.0.0.0"), ("198.18.0.10:8443", "0.0.0.0:8443")],
        expect: &["spec.loadBalancer.vip: 0.0.0.0 cannot be the VIP: it is the unspecified address"],
    },
    Case {
        name: "VRRP's own multicast address as the VIP",
        edits: &[("vip: 198.18.0.10", "vip: 224.0.0.18"), ("198.18.0.10:8443", "224.0.0.18:8443")],
        expect: &["spec.loadBalancer.vip: 224.0.0.18 cannot be the VIP: it is VRRP's multicast address"],
    },
    Case {
        name: "multicast VIP",
        edits: &[("vip: 198.18.0.10", "vip: 239.1.2.3"), ("198.18.0.10:8443", "239.1.2.3:8443")],
        expect: &["spec.loadBalancer.vip: 239.1.2.3 cannot be the VIP: it is a multicast address"],
    },
    Case {
        name: "broadcast VIP",
        edits: &[("vip: 198.18.0.10", "vip: 255.255.255.255"), ("198.18.0.10:8443", "255.255.255.255:8443")],
        expect: &["spec.loadBalancer.vip: 255.255.255.255 cannot be the VIP: it is the broadcast address"],
    },
    Case {
        name: "reserved VIP",
        edits: &[("vip: 198.18.0.10", "vip: 240.0.0.1"), ("198.18.0.10:8443", "240.0.0.1:8443")],
        expect: &["spec.loadBalancer.vip: 240.0.0.1 cannot be the VIP: it is in 240.0.0.0/4"],
    },
    Case {
        name: "IPv4-mapped VIP that is a host address",
        edits: &[("vip: 198.18.0.10", "vip: '::ffff:198.18.0.12'"), ("198.18.0.10:8443", "198.18.0.12:8443")],
        expect: &[
            "spec.loadBalancer.vip: ::ffff:198.18.0.12 is an IPv4-mapped IPv6 address; write it as 198.18.0.12",
            "spec.loadBalancer.vip: 198.18.0.12 is the address of spec.hosts[1] (cp2)",
        ],
    },
    Case {
        name: "IPv4-mapped duplicate host address",
        edits: &[("198.18.0.21,", "'::ffff:198.18.0.13',")],
        expect: &[
            "spec.hosts[3].address: ::ffff:198.18.0.13 is an IPv4-mapped IPv6 address; write it as 198.18.0.13",
            "spec.hosts[3].address: 198.18.0.13 is already the address of spec.hosts[2]",
        ],
    },
    Case {
        name: "IPv4-mapped loopback host address",
        edits: &[("198.18.0.21,", "'::ffff:127.0.0.1',")],
        expect: &["spec.hosts[3].address: 127.0.0.1 cannot be a host address: it is a loopback address"],
    },
    Case {
        name: "loopback endpoint of an external balancer",
        edits: &[
            ("{type: keepalived-haproxy, vip: 198.18.0.10, interface: eth0}", "{type: external}"),
            ("198.18.0.10:8443", "127.0.0.1:6443"),
        ],
        expect: &["spec.controlPlaneEndpoint: 127.0.0.1 cannot be the endpoint address: it is a loopback address"],
    },
    Case {
        name: "multicast endpoint of an external balancer",
        edits: &[
            ("{type: keepalived-haproxy, vip: 198.18.0.10, interface: eth0}", "{type: external}"),
            ("198.18.0.10:8443", "224.0.0.18:6443"),
        ],
        expect: &["spec.controlPlaneEndpoint: 224.0.0.18 cannot be the endpoint address"],
    },
    Case {
        name: "broadcast host address",
        edits: &[("198.18.0.21,", "255.255.255.255,")],
        expect: &["spec.hosts[3].address: 255.255.255.255 cannot be a host address: it is the broadcast address"],
    },
    Case {
        name: "VRRP multicast host address",
        edits: &[("198.18.0.21,", "224.0.0.18,")],
        expect: &["spec.hosts[3].address: 224.0.0.18 cannot be a host address: it is VRRP's multicast address"],
    },
    Case {
        name: "host address in 0.0.0.0/8",
        edits: &[("198.18.0.21,", "0.1.2.3,")],
        expect: &["spec.hosts[3].address: 0.1.2.3 cannot be a host address: it is in 0.0.0.0/8"],
    },
    Case {
        name: "host name longer than a label value",
        edits: &[("{name: w1,", "{name: n123456789012345678901234567890123456789012345678901234567890123,")],
        expect: &["spec.hosts[3].name: \"n1234", "is 64 characters long; a node name can have at most 63"],
    },
    Case {
        name: "253-character host name",
        edits: &[(
            "{name: w1,",
            "{name: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.ccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc.ddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd,",
        )],
        expect: &["spec.hosts[3].name: \"aaaa", "is 253 characters long"],
    },
    Case {
        name: "service subnet too small for the DNS address",
        edits: &[("serviceSubnet: 10.96.0.0/12", "serviceSubnet: 10.96.0.0/29")],
        expect: &["spec.networking.serviceSubnet: 10.96.0.0/29 is too small", "tenth address", "/28 or larger"],
    },
    Case {
        name: "service subnet of four addresses",
        edits: &[("serviceSubnet: 10.96.0.0/12", "serviceSubnet: 10.96.0.0/30")],
        expect: &["spec.networking.serviceSubnet: 10.96.0.0/30 is too small"],
    },
    Case {
        name: "pod subnet smaller than the node mask",
        edits: &[("podSubnet: 10.244.0.0/16", "podSubnet: 10.244.0.0/25")],
        expect: &["spec.networking.podSubnet: 10.244.0.0/25 is smaller than one node's pod range", "/24 or larger"],
    },
    Case {
        name: "pod subnet too large for the node ranges",
        edits: &[("podSubnet: 10.244.0.0/16", "podSubnet: 8.0.0.0/7")],
        expect: &["spec.networking.podSubnet: 8.0.0.0/7 is too large", "use /8 or smaller"],
    },
    Case {
        name: "image repository that is not a reference",
        edits: &[("kubernetesVersion: v1.31.4\n", "kubernetesVersion: v1.31.4\n  imageRepository: ':::'\n")],
        expect: &["spec.imageRepository: \":::\" is not a registry path"],
    },
    Case {
        name: "image repository with upper-case path",
        edits: &[(
            "kubernetesVersion: v1.31.4\n",
            "kubernetesVersion: v1.31.4\n  imageRepository: registry.local/K8s\n",
        )],
        expect: &["spec.imageRepository: \"registry.local/K8s\" is not a registry path"],
    },
    Case {
        name: "haproxy image that is not a reference",
        edits: &[("interface: eth0}", "interface: eth0, haproxyImage: ':::'}")],
        expect: &["spec.loadBalancer.haproxyImage: \":::\" is not an image reference"],
    },
    Case {
        name: "keepalived image with an empty tag",
        edits: &[("interface: eth0}", "interface: eth0, keepalivedImage: 'osixia/keepalived:'}")],
        expect: &["spec.loadBalancer.keepalivedImage: \"osixia/keepalived:\" is not an image reference"],
    },
    Case {
        name: "haproxy image with a short digest",
        edits: &[("interface: eth0}", "interface: eth0, haproxyImage: 'haproxy@sha256:abc'}")],
        expect: &["spec.loadBalancer.haproxyImage: \"haproxy@sha256:abc\" is not an image reference"],
    },
    Case {
        name: "misspelt load balancer field with a suggestion",
        edits: &[("interface: eth0}", "interfce: eth0}")],
        expect: &[
            "spec.loadBalancer.interfce: unknown field; did you mean \"interface\"?",
            "spec.loadBalancer.interface: is required",
        ],
    },
    Case {
        name: "misspelt load balancer field beside a bad VIP",
        edits: &[("vip: 198.18.0.10, interface: eth0}", "vip: 198.18.0.300, interfce: eth0}")],
        expect: &[
            "spec.loadBalancer.vip: \"198.18.0.300\" is not an IP address",
            "spec.loadBalancer.interfce: unknown field; did you mean \"interface\"?",
        ],
    },
    Case {
        name: "misspelt field under a load balancer without a type",
        edits: &[("type: keepalived-haproxy, ", "tpye: keepalived-haproxy, ")],
        expect: &[
            "spec.loadBalancer.type: is required",
            "spec.loadBalancer.tpye: unknown field; did you mean \"type\"?",
        ],
    },
    Case {
        name: "a second YAML document",
        edits: &[("role: worker, ssh: {user: ops}}\n", "role: worker, ssh: {user: ops}}\n---\nkind: Other\n")],
        expect: &["is not valid YAML: line ", "a second YAML document starts here"],
    },
    Case {
        name: "IPv6 endpoint without a port",
        edits: &[("vip: 198.18.0.10", "vip: 'fd00::1'"), ("198.18.0.10:8443", "'[fd00::1]'")],
        expect: &["spec.controlPlaneEndpoint: \"[fd00::1]\" needs a port, e.g. [fd00::1]:8443"],
    },
    Case {
        name: "IPv6 endpoint without brackets",
        edits: &[("198.18.0.10:8443", "'fd00::1'")],
        expect: &["spec.controlPlaneEndpoint: write an IPv6 endpoint as [address]:port, e.g. [fd00::1]:8443"],
    },
    Case {
        name: "IPv6 endpoint with an unclosed bracket",
        edits: &[("198.18.0.10:8443", "'[fd00::1:8443'")],
        expect: &["spec.controlPlaneEndpoint: \"[fd00::1:8443\" opens '[' without closing it"],
    },
    Case {
        name: "endpoint port with a sign",
        edits: &[("198.18.0.10:8443", "'198.18.0.10:+8443'")],
        expect: &["spec.controlPlaneEndpoint: port \"+8443\" in \"198.18.0.10:+8443\" is not a number"],
    },
    Case {
        name: "a host with a bad role still counts for duplicate addresses",
        edits: &[(
            "{name: cp2, address: 198.18.0.12, role: control-plane}",
            "{name: cp2, address: 198.18.0.11, role: master}",
        )],
        expect: &[
            "spec.hosts[1].role: \"master\" is not one of control-plane, worker",
            "spec.hosts[1].address: 198.18.0.11 is already the address of spec.hosts[0]",
        ],
    },
    Case {
        name: "a host with a bad name still counts for the VIP",
        edits: &[
            ("{name: cp2,", "{name: CP2,"),
            ("vip: 198.18.0.10", "vip: 198.18.0.12"),
            ("198.18.0.10:8443", "198.18.0.12:8443"),
        ],
        expect: &[
            "spec.hosts[1].name: \"CP2\" is not a valid node name",
            "spec.loadBalancer.vip: 198.18.0.12 is the address of spec.hosts[1]",
        ],
    },
    Case {
        name: "a host with a bad SSH port still counts for the subnets",
        edits: &[(
            "198.18.0.21, role: worker, ssh: {user: ops}",
            "10.244.0.21, role: worker, ssh: {user: ops, port: 0}",
        )],
        expect: &[
            "spec.hosts[3].ssh.port: 0 is out of range 1-65535",
            "spec.hosts[3].address: 10.244.0.21 is inside spec.networking.podSubnet 10.244.0.0/16",
        ],
    },
    Case {
        name: "VRRP router id out of range",
        edits: &[("interface: eth0}", "interface: eth0, virtualRouterId: 0}")],
        expect: &["spec.loadBalancer.virtualRouterId: 0 is out of range 1-255"],
    },
    Case {
        name: "interface name too long",
        edits: &[("interface: eth0}", "interface: eth0123456789abcdef}")],
        expect: &["spec.loadBalancer.interface: \"eth0123456789abcdef\" is not a network interface name"],
    },
    Case {
        name: "cluster name with an underscore",
        edits: &[("metadata: {name: lab}", "metadata: {name: lab_1}")],
        expect: &["metadata.name: \"lab_1\" must be 1-63 lowercase letters"],
    },
    Case {
        name: "CA validity under an hour",
        edits: &[("keyAlgorithm: ecdsa-p256", "keyAlgorithm: ecdsa-p256, caValidity: 30m")],
        expect: &["spec.certificates.caValidity: \"30m\" is too short"],
    },
    Case {
        name: "renewal window as long as the validity",
        edits: &[("keyAlgorithm: ecdsa-p256", "keyAlgorithm: ecdsa-p256, validity: 30d, renewBefore: 30d")],
        expect: &["spec.certificates.renewBefore: 30d is not shorter than validity 30d"],
    },
    Case {
        name: "renewal window that is not a duration",
        edits: &[("keyAlgorithm: ecdsa-p256", "keyAlgorithm: ecdsa-p256, renewBefore: soon")],
        expect: &["spec.certificates.renewBefore: \"soon\" is not a duration such as 720h or 30d"],
    },
    Case {
        name: "apiserver bind port on the etcd client port",
        edits: &[("kubernetesVersion: v1.31.4\n", "kubernetesVersion: v1.31.4\n  apiServer: {bindPort: 2379}\n")],
        expect: &["spec.apiServer.bindPort: 2379 is the etcd client port"],
    },
    Case {
        name: "one pass: a typo, an endpoint without a port, a VIP of the other family, a small subnet",
        edits: &[
            ("vip: 198.18.0.10, interface: eth0}", "vip: 'fd00::10', interfce: eth0}"),
            ("198.18.0.10:8443", "'[fd00::10]'"),
            ("serviceSubnet: 10.96.0.0/12", "serviceSubnet: 10.96.0.0/29"),
        ],
        expect: &[
            "has 5 problems",
            "spec.loadBalancer.interfce: unknown field; did you mean \"interface\"?",
            "spec.controlPlaneEndpoint: \"[fd00::10]\" needs a port",
            "spec.loadBalancer.vip: fd00::10 is IPv6, but spec.hosts[0].address 198.18.0.11 is IPv4",
            "spec.networking.serviceSubnet: 10.96.0.0/29 is too small",
        ],
    },
    Case {
        name: "bad DNS domain",
        edits: &[("dnsDomain: cluster.local", "dnsDomain: Cluster.Local")],
        expect: &["spec.networking.dnsDomain: \"Cluster.Local\" is not a valid DNS name"],
    },
    Case {
        name: "a CRI endpoint that is not a unix socket",
        edits: &[("role: worker, ssh: {user: ops}}", "role: worker, ssh: {user: ops}, criSocket: /run/crio.sock}")],
        expect: &["spec.hosts[3].criSocket: \"/run/crio.sock\" is not a CRI endpoint"],
    },
    Case {
        name: "a CNI manifest that is not there",
        edits: &[("dnsDomain: cluster.local}", "dnsDomain: cluster.local, cniManifest: no-such-cni.yaml}")],
        expect: &["spec.networking.cniManifest: cannot read", "no-such-cni.yaml"],
    },
    Case {
        name: "add-ons that are not booleans, and a typo among them",
        edits: &[("  etcd: {", "  addons: {kubeProxy: 'no', coreDns: false}\n  controlPlaneTaint: 0\n  etcd: {")],
        expect: &["spec.addons.kubeProxy", "spec.addons.coreDns: unknown field", "spec.controlPlaneTaint"],
    },
];

fn kubeha() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kubeha"))
}

/// Runs `kubeha validate` on `text` as `dir/inventory.yaml`, in `dir` and with `dir` as the
/// home and state directories, and checks that it wrote nothing there.
fn validate(dir: &Path, text: &str) -> std::process::Output {
    let path = dir.join("inventory.yaml");
    std::fs::write(&path, text).unwrap();
    let out = kubeha()
        .args(["validate", "-i"])
        .arg(&path)
        .current_dir(dir)
        .env("HOME", dir)
        .env("XDG_STATE_HOME", dir.join("state"))
        .env_remove("KUBEHA_STATE_DIR")
        .output()
        .unwrap();
    let left: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["inventory.yaml"], "validate wrote nothing, and created no state directory");
    out
}

fn apply(edits: &[(&str, &str)]) -> String {
    let mut text = GOOD.to_string();
    for (from, to) in edits {
        assert!(text.contains(from), "edit {from:?} does not apply");
        text = text.replacen(from, to, 1);
    }
    text
}

#[test]
fn the_good_inventory_validates() {
    let dir = tempfile::tempdir().unwrap();
    let out = validate(dir.path(), GOOD);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("endpoint: https://198.18.0.10:8443"), "{stdout}");
    assert!(stdout.contains("etcd members (3): cp1=https://198.18.0.11:2380"), "{stdout}");
    assert!(stdout.contains("w1    198.18.0.21  worker         ops@198.18.0.21:22 (sudo)"), "{stdout}");
}

#[test]
fn every_bad_inventory_names_its_field_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for case in CASES {
        let out = validate(dir.path(), &apply(case.edits));
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(2) {
            failures.push(format!("{}: exit {:?}, stderr:\n{stderr}", case.name, out.status.code()));
        }
        for want in case.expect {
            if !stderr.contains(want) {
                failures.push(format!("{}: missing {want:?} in:\n{stderr}", case.name));
            }
        }
        if !stderr.contains(&dir.path().join("inventory.yaml").display().to_string()) {
            failures.push(format!("{}: the message does not name the file:\n{stderr}", case.name));
        }
    }
    assert!(CASES.len() >= 80);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn all_problems_are_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let text = apply(&[
        ("v1.31.4", "v1.31"),
        ("port: 22,", "port: 0,"),
        ("{name: cp2,", "{name: cp1,"),
        ("podSubnet: 10.244.0.0/16", "podSubnet: 10.96.0.0/16"),
    ]);
    let out = validate(dir.path(), &text);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("has 4 problems:"), "{stderr}");
    for want in ["spec.kubernetesVersion", "spec.ssh.port", "spec.hosts[1].name", "spec.networking.podSubnet"] {
        assert!(stderr.contains(want), "missing {want}: {stderr}");
    }
}

#[test]
fn an_even_member_count_is_allowed_when_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let text = apply(&[(CP3, ""), ("version: 3.5.16-0}", "version: 3.5.16-0, allowEvenMemberCount: true}")]);
    let out = validate(dir.path(), &text);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn yaml_syntax_errors_give_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let out = validate(dir.path(), &GOOD.replace("  hosts:\n", "  hosts: [\n"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("is not valid YAML: line "), "{stderr}");

    let dup = GOOD.replace("  etcd:", "  kubernetesVersion: v1.30.0\n  etcd:");
    let out = validate(dir.path(), &dup);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("duplicate mapping key: kubernetesVersion"), "{stderr}");
}

#[test]
fn a_missing_inventory_is_bad_input() {
    let out = kubeha().args(["validate", "-i", "/nonexistent/inventory.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read inventory /nonexistent/inventory.yaml"));
}

#[test]
fn json_output_is_the_resolved_plan() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inventory.yaml");
    std::fs::write(&path, GOOD).unwrap();
    let out = kubeha().args(["validate", "-o", "json", "-i"]).arg(&path).output().unwrap();
    assert!(out.status.success());
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["hosts"][3]["ssh"]["user"], "ops");
    assert_eq!(plan["hosts"][3]["ssh"]["sudo"], true);
    assert_eq!(plan["hosts"][0]["ssh"]["sudo"], false);
    assert_eq!(plan["loadBalancer"]["type"], "keepalived-haproxy");
    assert_eq!(plan["certificates"]["validity"], "365d");
    let home = std::env::var("HOME").unwrap();
    assert_eq!(plan["hosts"][0]["ssh"]["identityFile"], format!("{home}/.ssh/id_ed25519"));
    // The inventory's own field names.
    assert!(plan["certificates"].get("extraSANs").is_some() && plan["certificates"].get("extraSans").is_none());
}

/// The inventory with `control_planes` control planes, numbered from cp1.
fn with_control_planes(control_planes: usize) -> String {
    let hosts: String = (1..=control_planes)
        .map(|i| {
            format!("    - {{name: cp{i}, address: 198.18.{}.{}, role: control-plane}}\n", 1 + i / 200, 1 + i % 200)
        })
        .collect();
    let (head, _) = GOOD.split_once("  hosts:\n").unwrap();
    format!("{head}  hosts:\n{hosts}")
}

#[test]
fn more_control_planes_than_keepalived_can_rank_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = validate(dir.path(), &with_control_planes(151));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("spec.hosts: has 151 control planes, more than keepalived can rank"), "{stderr}");
    let out = validate(dir.path(), &with_control_planes(149));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn oversized_and_exploding_inputs_fail_fast_with_plain_messages() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = kubeha().args(["validate", "-i", "/dev/zero"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("inventory /dev/zero is larger than 1024 KiB"), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    let mut bomb = GOOD.to_string();
    bomb.push_str("x0: &x0 [a, a, a, a, a, a, a, a, a, a]\n");
    for i in 1..9 {
        bomb.push_str(&format!("x{i}: &x{i} [{}]\n", vec![format!("*x{}", i - 1); 10].join(", ")));
    }
    let out = validate(dir.path(), &bomb);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("expands too far") && !stderr.contains("budget") && stderr.lines().count() == 1,
        "{stderr}"
    );
}

#[test]
fn the_inventory_can_come_from_standard_input() {
    use std::io::Write;
    let mut child = kubeha()
        .args(["validate", "-i", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(GOOD.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("etcd members (3)"));

    let mut child = kubeha()
        .args(["validate", "-i", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(GOOD.replace("v1.31.4", "v1.31").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("inventory (standard input) has 1 problem"));
}

#[test]
fn a_closed_stdout_ends_the_output_quietly_with_the_commands_own_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inventory.yaml");
    std::fs::write(&path, GOOD).unwrap();
    for format in ["json", "text"] {
        // The reading end is gone before kubeha writes: every write meets a closed pipe.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = kubeha()
            .args(["validate", "-o", format, "-i"])
            .arg(&path)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{format}: {stderr}");
        assert!(stderr.is_empty(), "{format}: {stderr}");
    }
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, GOOD.replace("v1.31.4", "v1.31")).unwrap();
    let out = kubeha().args(["validate", "-i"]).arg(&bad).stdout(writer).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn quiet_and_verbose_are_global_and_exclusive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inventory.yaml");
    std::fs::write(&path, GOOD).unwrap();
    let out = kubeha().args(["-q", "validate", "-i"]).arg(&path).output().unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = kubeha().args(["validate", "-vv", "-i"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = kubeha().args(["-q", "-v", "validate", "-i"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn an_unsupported_version_is_rendered_only_when_allowed_and_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inventory.yaml");
    std::fs::write(&path, GOOD.replace("v1.31.4", "v1.37.0").replace("  etcd: {version: 3.5.16-0}\n", "")).unwrap();
    let out = kubeha().args(["validate", "-i"]).arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("v1.37.0 is not supported: kubeha renders Kubernetes v1.31.x to v1.36.x"), "{stderr}");
    let out = kubeha().args(["validate", "--allow-unsupported-version", "-i"]).arg(&path).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("WARN") && stderr.contains("rendering it with kubeadm v1.36's rules"), "{stderr}");
    // The newest row's etcd, since the inventory names none.
    assert!(stdout.contains("Kubernetes v1.37.0, etcd 3.6.8-0"), "{stdout}");
    assert!(stdout.contains("rendered with kubeadm v1.36's rules"), "{stdout}");
    let out = kubeha().args(["-q", "validate", "--allow-unsupported-version", "-i"]).arg(&path).output().unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_cni_manifest_is_read_with_the_inventory_and_every_document_checked() {
    let dir = tempfile::tempdir().unwrap();
    let good = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: cni, namespace: kube-system}\n---\n\
                apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: cni, namespace: kube-system}\nspec: {}\n";
    // Beside validate's directory, which must stay untouched.
    let cni_dir = tempfile::tempdir().unwrap();
    let cni = cni_dir.path().join("cni.yaml");
    std::fs::write(&cni, good).unwrap();
    let with_cni = GOOD
        .replace("dnsDomain: cluster.local}", &format!("dnsDomain: cluster.local, cniManifest: {}}}", cni.display()));
    let out = validate(dir.path(), &with_cni);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(&cni, format!("{good}---\nkind: ConfigMap\nmetadata: {{}}\n")).unwrap();
    let out = validate(dir.path(), &with_cni);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cni.yaml: document 3 has no apiVersion, metadata.name"), "{stderr}");
}
