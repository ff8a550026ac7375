//! The process's TLS crypto provider.
//!
//! The daemon's binary carries one provider, ring (kube's), and reqwest is built without
//! one of its own, so every TLS client (kube's, the HTTP checks', the webhooks') takes
//! the process default, installed here. Test builds also carry reqwest's aws-lc-rs (see
//! Cargo.toml); with two providers compiled in, rustls cannot pick one by itself, which
//! is one more reason to install it explicitly.

/// Installs ring as the process's default provider unless one is installed already.
/// Called first thing by `main`, and again by the library's client builders (the
/// cluster clients, the HTTP checks' client) for callers that do not start in `main`. Losing a race with another
/// installer is fine: any provider will do.
pub fn install_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_provider_is_installed_and_http_clients_build() {
        super::install_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
        crate::probe::http::client(std::time::Duration::from_secs(1)).unwrap();
    }
}
