//! Stage 1: the file as written (serde, `deny_unknown_fields`).

use serde::Deserialize;

// ---- stage 1: file structs ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Pool used when no route matches; absent means 404.
    pub default_pool: Option<String>,
    #[serde(default)]
    pub global: FileGlobal,
    #[serde(default)]
    pub timeouts: FileTimeouts,
    #[serde(default)]
    pub limits: FileLimits,
    #[serde(default)]
    pub headers: FileHeaders,
    #[serde(default)]
    pub paths: FilePaths,
    #[serde(default)]
    pub retries: FileRetries,
    #[serde(default)]
    pub http2: super::http2::FileHttp2,
    /// Absent: lbd runs standalone and serves every listener all the time.
    pub vrrp: Option<FileVrrp>,
    /// Absent: no peer link; soft state (sticky, rate limits) stays local.
    pub peer: Option<super::peer::FilePeer>,
    #[serde(default)]
    pub listener: Vec<FileListener>,
    #[serde(default)]
    pub pool: Vec<FilePool>,
    #[serde(default)]
    pub route: Vec<FileRoute>,
    #[serde(default)]
    pub rate_limit: Vec<FileRateLimit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileGlobal {
    pub log_format: Option<String>,
    pub log_level: Option<String>,
    pub admin: Option<String>,
    pub drain_timeout_ms: Option<u64>,
    pub max_client_conns: Option<u32>,
    pub access_log: Option<String>,
    /// This balancer's name in the node header and `/status` (default: the hostname).
    pub node_name: Option<String>,
    /// Key for the insert-mode sticky cookie MAC; the same file on both nodes.
    pub cookie_secret_file: Option<String>,
    /// Bearer token the admin listener's write endpoints require; absent: writes disabled.
    pub admin_token_file: Option<String>,
    /// Open connections allowed from one client IP (0: no cap).
    pub max_conns_per_client: Option<u32>,
    pub workers: Option<usize>,
    pub rate_limit_max_keys: Option<usize>,
    pub rate_limit_max_bytes: Option<usize>,
    pub http1_fast_path: Option<bool>,
    /// Seconds between TLS session-ticket key rotations (also the ticket lifetime).
    pub tls_ticket_rotate_s: Option<u64>,
    /// Where the soft state survives a restart (absent: it does not).
    pub soft_state_file: Option<String>,
    /// Milliseconds between the state file's journal flushes.
    pub soft_state_flush_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTimeouts {
    pub connect_ms: Option<u64>,
    pub request_header_ms: Option<u64>,
    pub backend_response_ms: Option<u64>,
    pub client_idle_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    pub max_header_bytes: Option<usize>,
    pub max_request_line: Option<usize>,
    pub max_request_body_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHeaders {
    pub x_forwarded_for: Option<bool>,
    pub x_forwarded_proto: Option<bool>,
    pub x_forwarded_host: Option<bool>,
    pub x_forwarded_port: Option<bool>,
    pub x_real_ip: Option<bool>,
    pub forwarded: Option<bool>,
    pub via: Option<bool>,
    pub via_name: Option<String>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Response header carrying `global.node_name`; "" disables it.
    pub node_header: Option<String>,
}

/// `[paths]` as written: request path normalisation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePaths {
    pub merge_slashes: Option<bool>,
    /// `"keep"`, `"decode"` or `"reject"`.
    pub encoded_slash: Option<String>,
}

/// `[vrrp]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileVrrp {
    pub socket: Option<String>,
    pub heartbeat_interval_ms: Option<u64>,
    pub reconnect_interval_ms: Option<u64>,
    pub lost_timeout_ms: Option<u64>,
    pub unable_when_no_healthy_backend: Option<BoolOrList>,
    pub drain_timeout_ms: Option<u64>,
}

/// `true`/`false` or a list of names.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum BoolOrList {
    Bool(bool),
    List(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRetries {
    pub attempts: Option<u32>,
    pub budget_percent: Option<u32>,
    pub min_per_sec: Option<u32>,
    pub max_body_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileListener {
    pub name: Option<String>,
    pub address: Option<String>,
    /// Bind even if the address is not (yet) local: a VIP held by the peer (IP_FREEBIND).
    pub freebind: Option<bool>,
    /// Bind only while vrrpd is Master for this instance (needs `[vrrp]`).
    pub vrrp_instance: Option<String>,
    /// Terminate TLS on this listener.
    pub tls: Option<FileTls>,
}

/// `[listener.tls]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    /// Certificate chain and key pairs; chosen by SNI, the first is the default.
    #[serde(default)]
    pub certs: Vec<FileCertPair>,
    /// "default" (the first pair) or "refuse" for a client without SNI or with an unknown name.
    pub unknown_sni: Option<String>,
    /// "1.2" or "1.3".
    pub min_version: Option<String>,
    /// Warn (and report in `lbd_tls_cert_expiry_seconds`) when a certificate expires sooner.
    pub expiry_warning_days: Option<u32>,
    /// How often the certificate files are checked for changes; 0: only on reload.
    pub watch_ms: Option<u64>,
    /// Client certificates (mTLS): the CA bundle (PEM) that signs them.
    pub client_ca: Option<String>,
    /// "required" (default with `client_ca`) or "optional".
    pub client_auth: Option<String>,
    /// The request header that carries a verified client certificate's subject upstream.
    pub client_subject_header: Option<String>,
}

/// One certificate chain (PEM) and its private key (PEM).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCertPair {
    pub cert: Option<String>,
    pub key: Option<String>,
    /// A DER OCSP response to staple (re-read with the pair).
    pub ocsp: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePool {
    pub name: Option<String>,
    pub algorithm: Option<String>,
    pub hash_key: Option<String>,
    pub queue_size: Option<u32>,
    pub queue_timeout_ms: Option<u64>,
    /// `"http1"` (default) or `"h2"` (HTTP/2 with prior knowledge to the backends).
    pub protocol: Option<String>,
    #[serde(default)]
    pub keepalive: FileKeepalive,
    #[serde(default)]
    pub backend: Vec<FileBackend>,
    pub health: Option<FileHealth>,
    #[serde(default)]
    pub passive: FilePassive,
    pub sticky: Option<FileSticky>,
    /// TLS to this pool's backends.
    pub tls: Option<FileUpstreamTls>,
}

/// `[pool.tls]` as written: TLS to the pool's backends.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpstreamTls {
    /// The CA bundle (PEM) backend certificates must chain to.
    pub ca: Option<String>,
    /// The name sent as SNI and checked against the backend's certificate.
    pub server_name: Option<String>,
    /// A client certificate chain (PEM) for backends that ask for one (mTLS).
    pub client_cert: Option<String>,
    /// Its private key (PEM).
    pub client_key: Option<String>,
}

/// `[pool.sticky]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSticky {
    pub mode: Option<String>,
    pub cookie: Option<String>,
    pub ttl_s: Option<u64>,
    pub secure: Option<bool>,
    pub http_only: Option<bool>,
    pub same_site: Option<String>,
    pub path: Option<String>,
    pub max_entries: Option<usize>,
    pub max_bytes: Option<usize>,
    pub max_key_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileKeepalive {
    pub idle_max: Option<u32>,
    pub idle_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBackend {
    pub name: Option<String>,
    pub address: Option<String>,
    pub weight: Option<u32>,
    pub max_conns: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHealth {
    pub kind: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub host: Option<String>,
    pub expect_status: Option<String>,
    /// `kind = "grpc"`: the service asked about (`""`, the default: the whole server).
    pub grpc_service: Option<String>,
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
    /// Start backends Unhealthy until `rise` probes pass (default: start Healthy).
    pub start_unhealthy: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePassive {
    pub consecutive_failures: Option<u32>,
    pub base_eject_ms: Option<u64>,
    pub max_eject_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    pub name: Option<String>,
    pub host: Option<String>,
    pub path_exact: Option<String>,
    pub path_prefix: Option<String>,
    pub header: Option<FileHeaderMatch>,
    pub methods: Option<Vec<String>>,
    pub pool: Option<String>,
    pub split: Option<Vec<FileSplit>>,
    /// `Upgrade` protocols tunnelled on this route besides `websocket`.
    pub upgrades: Option<Vec<String>>,
    /// Overrides `limits.max_request_body_bytes` for this route.
    pub max_request_body_bytes: Option<u64>,
    /// Answer plain-HTTP requests with a redirect to the same URL over HTTPS.
    pub redirect_to_https: Option<bool>,
    /// The port of that URL (default: none, i.e. 443).
    pub https_port: Option<u16>,
    /// `Strict-Transport-Security: max-age=N` on HTTPS responses of this route.
    pub hsts_max_age_s: Option<u64>,
    /// Add `includeSubDomains` to it.
    pub hsts_include_subdomains: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHeaderMatch {
    pub name: Option<String>,
    pub value: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSplit {
    pub pool: Option<String>,
    pub weight: Option<u32>,
}

/// `[[rate_limit]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRateLimit {
    pub name: Option<String>,
    pub key: Option<String>,
    pub rate: Option<f64>,
    pub burst: Option<u32>,
    pub routes: Option<Vec<String>>,
    /// `client_ip` keys: IPv6 clients in one network of this prefix share a bucket.
    pub ipv6_prefix_len: Option<u8>,
    pub max_key_bytes: Option<usize>,
}
