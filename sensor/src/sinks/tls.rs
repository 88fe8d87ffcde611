//! TLS client settings for network sinks (rustls; the server is verified by default).
use std::{path::Path, sync::Arc};

use anyhow::{anyhow, bail, Context as _, Result};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};

use crate::config::TlsConfig;

/// A ready client configuration and the name the server's certificate must carry.
pub struct TlsClient {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
}

pub fn client(tls: &TlsConfig, address: &str) -> Result<TlsClient> {
    let mut roots = RootCertStore::empty();
    match &tls.ca_file {
        Some(ca) => {
            for cert in read_certs(ca)? {
                roots
                    .add(cert)
                    .with_context(|| format!("adding a CA certificate from {}", ca.display()))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                bail!("no system CA certificates found: set tls.ca_file for sink {address}");
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots);
    let config = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .context("loading the TLS client certificate")?,
        (None, None) => builder.with_no_client_auth(),
        _ => bail!("tls.client_cert and tls.client_key go together"),
    };
    let host = match &tls.server_name {
        Some(name) => name.clone(),
        None => address
            .rsplit_once(':')
            .map(|(host, _)| host.trim_matches(['[', ']']).to_owned())
            .ok_or_else(|| anyhow!("sink address {address:?} has no port"))?,
    };
    let server_name =
        ServerName::try_from(host.clone()).map_err(|e| anyhow!("TLS server name {host:?}: {e}"))?;
    Ok(TlsClient {
        config: Arc::new(config),
        server_name,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading certificates from {}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificates in {}", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    crate::files::check_trusted(path, "TLS private key")?;
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("reading the private key in {}", path.display()))
}
