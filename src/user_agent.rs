//! The `User-Agent` of every request this program sends (Kubernetes API calls, HTTP
//! checks, webhook notices), so that a cluster's audit log, or a receiver's access log,
//! tells the daemon and the CLI from `kubectl`, `curl` or any other client.

use http::HeaderValue;

/// The daemon's: `kube-failover/<version> (<identity>)`, `identity` being the instance
/// identity its Leases carry (`daemon.identity`, or the host name). Characters a header
/// cannot carry, and parentheses, become `_`.
pub fn daemon(identity: &str) -> HeaderValue {
    let identity: String = identity
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '(' | ')' | '\\') {
                c
            } else {
                '_'
            }
        })
        .collect();
    header(format!(
        "kube-failover/{} ({identity})",
        env!("CARGO_PKG_VERSION")
    ))
}

/// The CLI commands': `kube-failover-cli/<version>`.
pub fn cli() -> HeaderValue {
    header(format!("kube-failover-cli/{}", env!("CARGO_PKG_VERSION")))
}

/// A client with no identity (tests, tools): `kube-failover/<version>`.
pub fn anonymous() -> HeaderValue {
    header(format!("kube-failover/{}", env!("CARGO_PKG_VERSION")))
}

fn header(text: String) -> HeaderValue {
    // Only visible ASCII and spaces are left: always a valid header value.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("kube-failover"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_and_cli_agents() {
        let v = env!("CARGO_PKG_VERSION");
        assert_eq!(
            daemon("obs-a"),
            format!("kube-failover/{v} (obs-a)").as_str()
        );
        assert_eq!(cli(), format!("kube-failover-cli/{v}").as_str());
        // An identity a header cannot carry as is.
        assert_eq!(
            daemon("host (1)\né"),
            format!("kube-failover/{v} (host__1___)").as_str()
        );
    }
}
