//! The LiveKit server configuration of one VisioCluster: a typed mirror of the YAML keys the operator sets,
//! the ports an SFU pod binds (checked for clashes), and the rendering. The rendered config holds the API
//! secret and the Redis password, so it only ever goes into a Secret.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{duration_seconds, port, short_hash, BuildError};
use crate::api::visiocluster::NetworkMode;
use crate::api::VisioCluster;

/// HTTP/WebSocket signalling port of LiveKit (also what the probes use).
pub const SIGNALING_PORT: u16 = 7880;
/// Prometheus port of LiveKit; the in-pod agent reads the load from it on localhost.
pub const METRICS_PORT: u16 = 6789;
/// Directory the config Secret is mounted at.
pub const CONFIG_DIR: &str = "/etc/livekit";
/// Key of the config Secret, and file name under [`CONFIG_DIR`].
pub const CONFIG_FILE: &str = "livekit.yaml";
/// Directory the TURN TLS Secret (`kubernetes.io/tls`) is mounted at.
pub const TURN_TLS_DIR: &str = "/etc/livekit-turn-tls";

/// A string that is serialized as is but never printed by `Debug`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Redacted(pub String);

impl Redacted {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The LiveKit server config (the subset the operator sets; LiveKit's defaults apply to the rest).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveKitConfig {
    /// HTTP/WebSocket signalling port.
    pub port: u16,
    /// WebRTC transport.
    pub rtc: RtcConfig,
    /// The Redis that ties the nodes into one cluster.
    pub redis: RedisConfig,
    /// API key to API secret.
    pub keys: BTreeMap<String, Redacted>,
    /// Embedded TURN server.
    pub turn: TurnConfig,
    /// Room defaults.
    pub room: RoomConfig,
    /// Prometheus endpoint.
    pub prometheus: PrometheusConfig,
    /// Log format.
    pub logging: LoggingConfig,
}

/// `rtc.*`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtcConfig {
    /// Single UDP mux port for media.
    pub udp_port: u16,
    /// ICE over TCP port.
    pub tcp_port: u16,
    /// Ask STUN servers for the node's public address (`spec.sfu.network.stunServers`). Off otherwise: with
    /// it on and no STUN server reachable, LiveKit refuses to start (`rtcconfig.determineIP`).
    pub use_external_ip: bool,
    /// The address advertised to clients (`spec.sfu.network.externalAddress`); in host network mode without
    /// it, LiveKit's `--node-ip` flag from the pod's `NODE_IP` (the node's address) wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_ip: Option<String>,
    /// The only STUN servers asked (LiveKit's public defaults never are).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stun_servers: Vec<String>,
}

/// `redis.*`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisConfig {
    /// `host:port`.
    pub address: String,
    /// Empty for an external Redis without a password.
    #[serde(default, skip_serializing_if = "Redacted::is_empty")]
    pub password: Redacted,
}

/// `turn.*`
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnConfig {
    /// Run the embedded TURN server.
    pub enabled: bool,
    /// Public name of the TURN server (the TLS certificate's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// TURN over UDP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_port: Option<u16>,
    /// TURN over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_port: Option<u16>,
    /// Certificate for TURN over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// Key for TURN over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
}

/// `room.*` (LiveKit takes timeouts as whole seconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomConfig {
    /// 0: no limit.
    pub max_participants: u32,
    /// Seconds an empty room is kept.
    pub empty_timeout: u32,
    /// Seconds a room stays open after the last participant left.
    pub departure_timeout: u32,
}

/// `prometheus.*`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrometheusConfig {
    /// Metrics port.
    pub port: u16,
}

/// `logging.*`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggingConfig {
    /// Structured logs.
    pub json: bool,
    /// Log level.
    pub level: String,
}

/// Transport protocol of a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The Kubernetes spelling (`TCP`, `UDP`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

/// One port an SFU pod binds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listener {
    /// Container port name (at most 15 characters).
    pub name: &'static str,
    /// Port number.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
    /// The spec field it comes from, for error messages.
    pub field: &'static str,
}

/// Every port the LiveKit container of an SFU pod binds, in a stable order: signalling, metrics, media,
/// then TURN when enabled. Refuses two listeners on one port and protocol, and, in host network mode,
/// ports below 1024 (the SFU runs as a non-root user without capabilities and cannot bind them on the host;
/// in pod network mode the pod's own `net.ipv4.ip_unprivileged_port_start` sysctl allows it).
pub fn listeners(vc: &VisioCluster) -> Result<Vec<Listener>, BuildError> {
    let spec = &vc.spec;
    let mut out = vec![
        Listener { name: "http", port: SIGNALING_PORT, protocol: Protocol::Tcp, field: "signalling port 7880" },
        Listener { name: "metrics", port: METRICS_PORT, protocol: Protocol::Tcp, field: "metrics port 6789" },
        Listener {
            name: "rtc-tcp",
            port: port("spec.sfu.network.tcpPort", spec.sfu.network.tcp_port)?,
            protocol: Protocol::Tcp,
            field: "spec.sfu.network.tcpPort",
        },
        Listener {
            name: "rtc-udp",
            port: port("spec.sfu.network.udpPort", spec.sfu.network.udp_port)?,
            protocol: Protocol::Udp,
            field: "spec.sfu.network.udpPort",
        },
    ];
    let turn = &spec.turn;
    if turn.enabled {
        if turn.udp {
            out.push(Listener {
                name: "turn-udp",
                port: port("spec.turn.udpPort", turn.udp_port)?,
                protocol: Protocol::Udp,
                field: "spec.turn.udpPort",
            });
        }
        if turn.tls_secret_name.is_some() {
            out.push(Listener {
                name: "turn-tls",
                port: port("spec.turn.tlsPort", turn.tls_port)?,
                protocol: Protocol::Tcp,
                field: "spec.turn.tlsPort",
            });
        }
    }
    for (i, a) in out.iter().enumerate() {
        if let Some(b) = out[..i].iter().find(|b| b.port == a.port && b.protocol == a.protocol) {
            return Err(BuildError::PortConflict {
                field: a.field,
                message: format!(
                    "{} port {} is already used by {}; every listener of an SFU pod needs its own port",
                    a.protocol.as_str(),
                    a.port,
                    b.field
                ),
            });
        }
    }
    if spec.sfu.network.mode == NetworkMode::HostNetwork {
        if let Some(low) = out.iter().find(|l| l.port < 1024) {
            return Err(BuildError::Unsupported {
                field: low.field,
                message: format!(
                    "port {} is below 1024, which the SFU (non-root, no capabilities) cannot bind in hostNetwork \
                     mode; use a port of 1024 or more, or spec.sfu.network.mode=podNetwork",
                    low.port
                ),
            });
        }
    }
    Ok(out)
}

/// The typed config of `vc`.
pub fn config(vc: &VisioCluster, creds: &super::Credentials, redis_address: &str) -> Result<LiveKitConfig, BuildError> {
    let spec = &vc.spec;
    if creds.api_key.is_empty() {
        return Err(BuildError::MissingCredential { field: "credentials.apiKey" });
    }
    if creds.api_secret.is_empty() {
        return Err(BuildError::MissingCredential { field: "credentials.apiSecret" });
    }
    if redis_address.is_empty() {
        return Err(BuildError::InvalidValue {
            field: "spec.redis.external.address",
            message: "the Redis address is empty".into(),
        });
    }
    // Validates every port once (range, clashes), so the values below are known good.
    listeners(vc)?;
    let rtc = RtcConfig {
        udp_port: port("spec.sfu.network.udpPort", spec.sfu.network.udp_port)?,
        tcp_port: port("spec.sfu.network.tcpPort", spec.sfu.network.tcp_port)?,
        use_external_ip: !spec.sfu.network.stun_servers.is_empty(),
        node_ip: spec.sfu.network.external_address.clone(),
        stun_servers: spec.sfu.network.stun_servers.clone(),
    };
    Ok(LiveKitConfig {
        port: SIGNALING_PORT,
        rtc,
        redis: RedisConfig { address: redis_address.to_string(), password: Redacted(creds.redis_password.clone()) },
        keys: BTreeMap::from([(creds.api_key.clone(), Redacted(creds.api_secret.clone()))]),
        turn: turn_config(vc)?,
        room: RoomConfig {
            max_participants: u32::try_from(spec.rooms.max_participants).map_err(|_| BuildError::InvalidValue {
                field: "spec.rooms.maxParticipants",
                message: format!("{} is negative", spec.rooms.max_participants),
            })?,
            empty_timeout: seconds_u32("spec.rooms.emptyTimeout", &spec.rooms.empty_timeout)?,
            departure_timeout: seconds_u32("spec.rooms.departureTimeout", &spec.rooms.departure_timeout)?,
        },
        prometheus: PrometheusConfig { port: METRICS_PORT },
        logging: LoggingConfig { json: true, level: "info".into() },
    })
}

fn turn_config(vc: &VisioCluster) -> Result<TurnConfig, BuildError> {
    let turn = &vc.spec.turn;
    if !turn.enabled {
        return Ok(TurnConfig::default());
    }
    let tls = turn.tls_secret_name.is_some();
    if !turn.udp && !tls {
        return Err(BuildError::InvalidValue {
            field: "spec.turn",
            message: "TURN is enabled without UDP or TLS: set spec.turn.udp=true or spec.turn.tlsSecretName".into(),
        });
    }
    if tls && turn.domain.is_none() {
        return Err(BuildError::InvalidValue {
            field: "spec.turn.domain",
            message: "required when spec.turn.tlsSecretName is set (the certificate's name)".into(),
        });
    }
    Ok(TurnConfig {
        enabled: true,
        domain: turn.domain.clone(),
        udp_port: if turn.udp { Some(port("spec.turn.udpPort", turn.udp_port)?) } else { None },
        tls_port: if tls { Some(port("spec.turn.tlsPort", turn.tls_port)?) } else { None },
        cert_file: tls.then(|| format!("{TURN_TLS_DIR}/tls.crt")),
        key_file: tls.then(|| format!("{TURN_TLS_DIR}/tls.key")),
    })
}

fn seconds_u32(field: &'static str, value: &str) -> Result<u32, BuildError> {
    let secs = duration_seconds(field, value)?;
    u32::try_from(secs).map_err(|_| BuildError::InvalidValue { field, message: format!("{value} is too long") })
}

/// The LiveKit config of `vc` as YAML. `redis_address` is `host:port` (see [`super::redis::redis_address`]).
pub fn render(vc: &VisioCluster, creds: &super::Credentials, redis_address: &str) -> Result<String, BuildError> {
    let cfg = config(vc, creds, redis_address)?;
    serde_norway::to_string(&cfg)
        .map_err(|e| BuildError::Serialization { what: "LiveKit config", message: e.to_string() })
}

/// Short hash of a rendered config, for the SFU pods' `visio.io/config-hash` annotation: a config change
/// rolls the pods. Truncated, and the config holds high-entropy secrets, so it reveals nothing.
pub fn config_hash(rendered: &str) -> String {
    short_hash(rendered.as_bytes(), 16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::testing::{cluster_with, test_cluster};
    use crate::builders::Credentials;
    use serde_json::json;

    fn creds() -> Credentials {
        Credentials {
            api_key: "APIkey123".into(),
            api_secret: "s3cr3t-api-secret-0123456789abcdef".into(),
            redis_password: "r3dis-password-0123456789".into(),
        }
    }

    fn parsed(vc: &VisioCluster) -> serde_norway::Value {
        serde_norway::from_str(&render(vc, &creds(), "visio-redis.mininterieur.svc:6379").unwrap()).unwrap()
    }

    #[test]
    fn default_config_keys() {
        let y = parsed(&test_cluster());
        assert_eq!(y["port"], 7880);
        assert_eq!(y["rtc"]["udp_port"], 7882);
        assert_eq!(y["rtc"]["tcp_port"], 7881);
        // No STUN by default: an offline ministry network has none, and LiveKit would refuse to start.
        assert_eq!(y["rtc"]["use_external_ip"], false);
        assert!(y["rtc"].get("node_ip").is_none() && y["rtc"].get("stun_servers").is_none());
        assert_eq!(y["redis"]["address"], "visio-redis.mininterieur.svc:6379");
        assert_eq!(y["redis"]["password"], "r3dis-password-0123456789");
        assert_eq!(y["keys"]["APIkey123"], "s3cr3t-api-secret-0123456789abcdef");
        assert_eq!(y["keys"].as_mapping().unwrap().len(), 1);
        assert_eq!(y["prometheus"]["port"], 6789);
        assert_eq!(y["logging"]["json"], true);
        assert_eq!(y["room"]["max_participants"], 0);
        assert_eq!(y["room"]["empty_timeout"], 300);
        assert_eq!(y["room"]["departure_timeout"], 20);
    }

    #[test]
    fn default_turn_is_udp_only() {
        let y = parsed(&test_cluster());
        assert_eq!(y["turn"]["enabled"], true);
        assert_eq!(y["turn"]["udp_port"], 3478);
        let turn = y["turn"].as_mapping().unwrap();
        for absent in ["tls_port", "cert_file", "key_file", "domain"] {
            assert!(!turn.contains_key(absent), "{absent}");
        }
    }

    #[test]
    fn turn_over_tls() {
        let vc = cluster_with(json!({"turn": {
            "domain": "turn.interieur.gouv.fr", "tlsSecretName": "turn-tls", "udp": false, "tlsPort": 5349
        }}));
        let y = parsed(&vc);
        assert_eq!(y["turn"]["enabled"], true);
        assert_eq!(y["turn"]["domain"], "turn.interieur.gouv.fr");
        assert_eq!(y["turn"]["tls_port"], 5349);
        assert_eq!(y["turn"]["cert_file"], "/etc/livekit-turn-tls/tls.crt");
        assert_eq!(y["turn"]["key_file"], "/etc/livekit-turn-tls/tls.key");
        assert!(!y["turn"].as_mapping().unwrap().contains_key("udp_port"));
    }

    #[test]
    fn turn_disabled_has_no_ports() {
        let y = parsed(&cluster_with(json!({"turn": {"enabled": false}})));
        assert_eq!(y["turn"]["enabled"], false);
        assert_eq!(y["turn"].as_mapping().unwrap().len(), 1);
    }

    #[test]
    fn turn_needs_a_transport_and_tls_needs_a_domain() {
        let err = render(&cluster_with(json!({"turn": {"udp": false}})), &creds(), "r:6379").unwrap_err();
        assert_eq!(err.label(), "invalid_value");
        assert!(err.to_string().starts_with("spec.turn: "));
        let err = render(&cluster_with(json!({"turn": {"tlsSecretName": "t"}})), &creds(), "r:6379").unwrap_err();
        assert!(err.to_string().starts_with("spec.turn.domain: "), "{err}");
    }

    #[test]
    fn room_timeouts_are_whole_seconds() {
        let vc = cluster_with(
            json!({"rooms": {"maxParticipants": 150, "emptyTimeout": "1h30m", "departureTimeout": "1.5s"}}),
        );
        let y = parsed(&vc);
        assert_eq!(y["room"]["max_participants"], 150);
        assert_eq!(y["room"]["empty_timeout"], 5400);
        assert_eq!(y["room"]["departure_timeout"], 2);
        assert!(y["room"]["empty_timeout"].is_u64());
    }

    #[test]
    fn invalid_durations_name_the_field() {
        let err = render(&cluster_with(json!({"rooms": {"emptyTimeout": "5 min"}})), &creds(), "r:1").unwrap_err();
        assert_eq!(err.label(), "invalid_duration");
        assert!(err.to_string().starts_with("spec.rooms.emptyTimeout: "), "{err}");
        let err = render(&cluster_with(json!({"rooms": {"departureTimeout": ""}})), &creds(), "r:1").unwrap_err();
        assert!(err.to_string().starts_with("spec.rooms.departureTimeout: "), "{err}");
        let err = render(&cluster_with(json!({"rooms": {"emptyTimeout": "9999999h"}})), &creds(), "r:1").unwrap_err();
        assert_eq!(err.label(), "invalid_value");
    }

    #[test]
    fn negative_max_participants_is_refused() {
        let err = render(&cluster_with(json!({"rooms": {"maxParticipants": -1}})), &creds(), "r:1").unwrap_err();
        assert!(err.to_string().starts_with("spec.rooms.maxParticipants: "));
    }

    #[test]
    fn a_fixed_external_address_is_advertised() {
        let y = parsed(&cluster_with(
            json!({"sfu": {"network": {"mode": "podNetwork", "externalAddress": "203.0.113.10"}}}),
        ));
        assert_eq!(y["rtc"]["node_ip"], "203.0.113.10");
        assert_eq!(y["rtc"]["use_external_ip"], false);
    }

    #[test]
    fn stun_only_with_the_servers_the_tenant_names() {
        let y = parsed(&cluster_with(json!({"sfu": {"network": {"stunServers": ["stun.interieur.gouv.fr:3478"]}}})));
        assert_eq!(y["rtc"]["use_external_ip"], true);
        assert_eq!(y["rtc"]["stun_servers"], json_to_yaml(json!(["stun.interieur.gouv.fr:3478"])));
        assert!(y["rtc"].get("node_ip").is_none());
    }

    fn json_to_yaml(v: serde_json::Value) -> serde_norway::Value {
        serde_norway::to_value(v).unwrap()
    }

    #[test]
    fn pod_network_does_not_use_external_ip() {
        let y = parsed(&cluster_with(
            json!({"sfu": {"network": {"mode": "podNetwork", "udpPort": 30000, "tcpPort": 30001}}}),
        ));
        assert_eq!(y["rtc"]["use_external_ip"], false);
        assert_eq!(y["rtc"]["udp_port"], 30000);
        assert_eq!(y["rtc"]["tcp_port"], 30001);
    }

    #[test]
    fn external_redis_without_password_omits_it() {
        let mut c = creds();
        c.redis_password.clear();
        let y: serde_norway::Value =
            serde_norway::from_str(&render(&test_cluster(), &c, "redis.shared.svc:6380").unwrap()).unwrap();
        assert_eq!(y["redis"]["address"], "redis.shared.svc:6380");
        assert!(!y["redis"].as_mapping().unwrap().contains_key("password"));
    }

    #[test]
    fn empty_credentials_are_refused() {
        let mut c = creds();
        c.api_key.clear();
        assert_eq!(
            render(&test_cluster(), &c, "r:1"),
            Err(BuildError::MissingCredential { field: "credentials.apiKey" })
        );
        let mut c = creds();
        c.api_secret.clear();
        assert_eq!(render(&test_cluster(), &c, "r:1").unwrap_err().label(), "missing_credentials");
        assert_eq!(render(&test_cluster(), &creds(), "").unwrap_err().label(), "invalid_value");
    }

    #[test]
    fn awkward_secrets_survive_yaml() {
        let c = Credentials {
            api_key: "key: with colon".into(),
            api_secret: "\"quoted\" # not a comment\nnewline".into(),
            redis_password: "- dash & star *".into(),
        };
        let cfg: LiveKitConfig = serde_norway::from_str(&render(&test_cluster(), &c, "r:1").unwrap()).unwrap();
        assert_eq!(cfg.keys["key: with colon"].0, c.api_secret);
        assert_eq!(cfg.redis.password.0, c.redis_password);
    }

    #[test]
    fn rendering_round_trips_and_is_deterministic() {
        let vc = test_cluster();
        let a = render(&vc, &creds(), "r:1").unwrap();
        let b = render(&vc, &creds(), "r:1").unwrap();
        assert_eq!(a, b);
        let back: LiveKitConfig = serde_norway::from_str(&a).unwrap();
        assert_eq!(back, config(&vc, &creds(), "r:1").unwrap());
        assert_eq!(config_hash(&a), config_hash(&b));
        assert_eq!(config_hash(&a).len(), 16);
        let other = render(&cluster_with(json!({"rooms": {"emptyTimeout": "6m"}})), &creds(), "r:1").unwrap();
        assert_ne!(config_hash(&a), config_hash(&other));
    }

    #[test]
    fn debug_redacts_secrets() {
        let cfg = config(&test_cluster(), &creds(), "r:1").unwrap();
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains(&creds().api_secret));
        assert!(!dbg.contains(&creds().redis_password));
        assert!(dbg.contains("<redacted>"));
    }

    #[test]
    fn listeners_default() {
        let l = listeners(&test_cluster()).unwrap();
        let summary: Vec<_> = l.iter().map(|l| (l.name, l.port, l.protocol)).collect();
        assert_eq!(
            summary,
            [
                ("http", 7880, Protocol::Tcp),
                ("metrics", 6789, Protocol::Tcp),
                ("rtc-tcp", 7881, Protocol::Tcp),
                ("rtc-udp", 7882, Protocol::Udp),
                ("turn-udp", 3478, Protocol::Udp),
            ]
        );
        assert!(l.iter().all(|l| l.name.len() <= 15));
    }

    #[test]
    fn listeners_with_tls_turn() {
        let vc = cluster_with(json!({"turn": {"domain": "turn.example.fr", "tlsSecretName": "t", "tlsPort": 5349}}));
        let names: Vec<_> = listeners(&vc).unwrap().iter().map(|l| l.name).collect();
        assert_eq!(names, ["http", "metrics", "rtc-tcp", "rtc-udp", "turn-udp", "turn-tls"]);
    }

    #[test]
    fn same_port_on_different_protocols_is_fine() {
        let vc =
            cluster_with(json!({"sfu": {"network": {"udpPort": 7881, "tcpPort": 7882}}, "turn": {"udpPort": 7880}}));
        assert!(listeners(&vc).is_ok());
    }

    #[test]
    fn port_conflicts_are_refused() {
        for (patch, field) in [
            (json!({"turn": {"udpPort": 7882}}), "spec.turn.udpPort"),
            (json!({"sfu": {"network": {"tcpPort": 7880}}}), "spec.sfu.network.tcpPort"),
            (json!({"sfu": {"network": {"tcpPort": 6789}}}), "spec.sfu.network.tcpPort"),
            (json!({"turn": {"domain": "t.fr", "tlsSecretName": "t", "tlsPort": 7881}}), "spec.turn.tlsPort"),
        ] {
            let err = listeners(&cluster_with(patch.clone())).unwrap_err();
            assert_eq!(err.label(), "port_conflict", "{patch}");
            assert!(err.to_string().starts_with(&format!("{field}: ")), "{err}");
        }
    }

    #[test]
    fn privileged_ports_need_pod_network() {
        let turn443 = json!({"turn": {"domain": "t.fr", "tlsSecretName": "t", "tlsPort": 443, "udp": false}});
        let err = listeners(&cluster_with(turn443.clone())).unwrap_err();
        assert_eq!(err.label(), "unsupported");
        assert!(err.to_string().starts_with("spec.turn.tlsPort: "));
        let mut pod = turn443;
        pod["sfu"] = json!({"network": {"mode": "podNetwork"}});
        assert!(listeners(&cluster_with(pod)).is_ok());
    }

    #[test]
    fn out_of_range_ports_are_refused() {
        let err = listeners(&cluster_with(json!({"turn": {"udpPort": 70000}}))).unwrap_err();
        assert_eq!(err.label(), "invalid_value");
        assert!(err.to_string().starts_with("spec.turn.udpPort: "));
        let err = listeners(&cluster_with(json!({"sfu": {"network": {"udpPort": 0}}}))).unwrap_err();
        assert!(err.to_string().starts_with("spec.sfu.network.udpPort: "));
    }
}
