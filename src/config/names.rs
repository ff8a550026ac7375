//! The Kubernetes name grammar the configuration must follow: DNS labels and subdomains
//! (namespaces, group, Deployment and ConfigMap names), label selectors as the API server
//! parses them, and the URLs of HTTP checks.

use kube_failover_core::text::shown;

/// RFC 1123 label: what Kubernetes requires of namespace names and what group names
/// must be to form ConfigMap names and metric labels.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: Deployment and ConfigMap names.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

pub(super) fn check_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not an absolute URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "scheme must be http or https, not {}",
            shown(parsed.scheme())
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("has no host".to_string());
    }
    Ok(())
}

/// Checks a Kubernetes label selector as the API server parses it: comma-separated
/// requirements `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`.
/// An empty selector would select every Deployment in the namespace, so it is refused.
pub fn check_label_selector(selector: &str) -> Result<(), String> {
    if selector.trim().is_empty() {
        return Err("empty (it would select every Deployment in the namespace)".to_string());
    }
    let mut depth = 0usize;
    let mut start = 0usize;
    let mut parts = Vec::new();
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1).ok_or("unbalanced ')'")?,
            ',' if depth == 0 => {
                parts.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".to_string());
    }
    parts.push(&selector[start..]);
    parts.into_iter().try_for_each(check_requirement)
}

fn check_requirement(req: &str) -> Result<(), String> {
    let req = req.trim();
    if req.is_empty() {
        return Err("empty requirement (stray comma?)".to_string());
    }
    if let Some(key) = req.strip_prefix('!') {
        return check_label_key(key.trim());
    }
    for op in ["!=", "==", "="] {
        if let Some((key, value)) = req.split_once(op) {
            check_label_key(key.trim())?;
            return check_label_value(value.trim());
        }
    }
    let (key, rest) = match req.find(|c: char| c.is_whitespace() || c == '(') {
        Some(at) => (&req[..at], req[at..].trim_start()),
        None => (req, ""),
    };
    check_label_key(key)?;
    if rest.is_empty() {
        return Ok(());
    }
    let values = rest
        .strip_prefix("notin")
        .or_else(|| rest.strip_prefix("in"))
        .map(str::trim_start)
        .ok_or_else(|| {
            format!(
                "expected =, ==, !=, in or notin after {}, found {}",
                shown(key),
                shown(rest)
            )
        })?;
    let inner = values
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(|| {
            format!(
                "expected a parenthesised value list after {}, found {}",
                shown(key),
                shown(values)
            )
        })?;
    if inner.trim().is_empty() {
        return Err(format!("empty value list for {}", shown(key)));
    }
    inner.split(',').try_for_each(|v| {
        let v = v.trim();
        if v.is_empty() {
            Err(format!("empty value in the list for {}", shown(key)))
        } else {
            check_label_value(v)
        }
    })
}

/// `[prefix/]name`: prefix a DNS subdomain, name as a label value but non-empty.
fn check_label_key(key: &str) -> Result<(), String> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if !is_dns_subdomain(prefix) {
                return Err(format!(
                    "label key prefix {} is not a DNS subdomain",
                    shown(prefix)
                ));
            }
            name
        }
        None => key,
    };
    if name.is_empty() {
        return Err(format!("missing label key in {}", shown(key)));
    }
    if !is_label_name(name) {
        return Err(format!(
            "invalid label key {} (letters, digits, '-', '_', '.', starting and ending \
             with a letter or digit, at most 63 characters)",
            shown(key)
        ));
    }
    Ok(())
}

fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value {} (letters, digits, '-', '_', '.', starting and ending \
             with a letter or digit, at most 63 characters)",
            shown(value)
        ))
    }
}

fn is_label_name(s: &str) -> bool {
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.len() <= 63
        && ends_ok(s.chars().next())
        && ends_ok(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_forms_the_api_server_accepts() {
        for good in [
            "env0=agent-trigger",
            "env0==agent-trigger",
            "env0!=agent-proxy",
            "app.kubernetes.io/name=env0-agent,env0=agent-trigger",
            "env0 in (agent-trigger, agent-proxy)",
            "env0 notin (agent-proxy)",
            "env0",
            "!legacy",
            "tier=",
            " env0 = agent-trigger ",
        ] {
            assert_eq!(check_label_selector(good), Ok(()), "{good}");
        }
    }
}
