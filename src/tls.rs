//! The process's TLS crypto provider.
//!
//! The daemon's binary carries one provider, ring (kube's), and reqwest is built without
//! one of its own, so every TLS client (kube's, the HTTP checks', the webhooks') takes
//! the process default, installed here. Tests and benches build the same way (reqwest's
//! dev-dependency adds no provider), so the suite runs the TLS setup users get.

/// Installs ring as the process's default provider unless one is installed already.
/// Called first thing by `main`, and again by the library's client builders (the
/// cluster clients, the HTTP checks' client) for callers that do not start in `main`.
/// Losing a race with another installer is fine: any provider will do.
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
        crate::probe::http::client(
            std::time::Duration::from_secs(1),
            crate::user_agent::anonymous(),
        )
        .unwrap();
    }
}
