//! `doppel serve`'s transport flags: TLS on the API and the plain-HTTP
//! listener for the Delphix SDK's tools.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use doppel_engine::layout::Layout;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsMode {
    /// TLS when listening beyond loopback, or when --tls-cert is given.
    Auto,
    On,
    Off,
}

#[derive(clap::Args)]
pub struct TransportArgs {
    /// TLS on the API. Without --tls-cert a self-signed certificate is made
    /// once in the data directory; its fingerprint is logged at every start.
    #[arg(long, env = "DOPPEL_TLS", value_enum, default_value_t = TlsMode::Auto)]
    tls: TlsMode,
    /// PEM certificate chain (leaf first) to serve instead of the self-signed one.
    #[arg(long, env = "DOPPEL_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "DOPPEL_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A plain-HTTP address serving only the Delphix-compatible routes
    /// (/resources/json/delphix), for `dvp upload` and `dvp download-logs`,
    /// which cannot speak TLS.
    #[arg(long, env = "DOPPEL_DELPHIX_LISTEN")]
    delphix_listen: Option<SocketAddr>,
}

impl TransportArgs {
    /// Flags that contradict each other, before anything starts.
    pub fn check(&self) -> Result<(), String> {
        if self.tls == TlsMode::Off && self.tls_cert.is_some() {
            return Err("--tls off contradicts --tls-cert: drop one of them".into());
        }
        Ok(())
    }

    /// Loads or makes the certificate, binds the listeners and says loudly
    /// when passwords and tokens would cross a network in clear.
    pub async fn listeners(
        self,
        listen: SocketAddr,
        layout: &Layout,
    ) -> anyhow::Result<(doppel_api::Listeners, String)> {
        let tls = match self.tls {
            TlsMode::On => true,
            TlsMode::Off => false,
            TlsMode::Auto => self.tls_cert.is_some() || !listen.ip().is_loopback(),
        };
        let tls = if !tls {
            None
        } else if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            let t = doppel_api::tls::load(cert, key)?;
            tracing::info!(cert = %cert.display(), fingerprint = %t.fingerprint, "serving TLS");
            Some(t)
        } else {
            let names = doppel_api::tls::self_signed_names(listen);
            let (cert, key) = (layout.tls_cert(), layout.tls_key());
            let (t, made) = doppel_api::tls::load_or_generate(&cert, &key, &names)?;
            if made {
                tracing::info!(cert = %cert.display(), names = ?names, "made a self-signed TLS certificate");
            }
            tracing::info!(cert = %cert.display(), fingerprint = %t.fingerprint,
                "serving TLS with the self-signed certificate: clients pass --ca-cert with this file or --tls-fingerprint with this fingerprint");
            Some(t)
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        if tls.is_none() && !listen.ip().is_loopback() {
            warn_plain(listen, "the API");
        }
        let api = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let delphix = match self.delphix_listen {
            Some(addr) => {
                if !addr.ip().is_loopback() {
                    warn_plain(
                        addr,
                        "the Delphix-compatible routes (dvp upload logs in here)",
                    );
                }
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (--delphix-listen)"))?;
                tracing::info!(listen = %addr, "serving the Delphix-compatible routes over plain HTTP");
                Some(l)
            }
            None => None,
        };
        let bound = api.local_addr().unwrap_or(listen);
        let listeners = doppel_api::Listeners {
            api,
            tls: tls.map(|t| t.config),
            delphix,
        };
        Ok((listeners, format!("{scheme}://{bound}")))
    }
}

fn warn_plain(addr: SocketAddr, what: &str) {
    tracing::warn!(
        "LISTENING ON {addr} WITHOUT TLS: {what} beyond loopback in plain HTTP; \
         passwords and tokens cross the network in clear. Use --tls on (or leave --tls auto)."
    );
}
