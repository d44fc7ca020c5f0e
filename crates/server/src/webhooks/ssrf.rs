//! Which webhook targets may be called (a server-side request forgery guard): `http` or
//! `https` URLs whose host resolves only to public addresses. Loopback, unspecified,
//! link-local, private (RFC 1918, unique-local `fc00::/7`), shared (CGNAT `100.64/10`),
//! multicast, broadcast, documentation and benchmarking ranges are refused, in IPv4 and IPv6,
//! IPv4-mapped and IPv4-compatible IPv6 judged as their IPv4 address, unless
//! `webhooks.allow_private_targets` is set. The check runs when an endpoint is created or
//! changed *and* at every connection: deliveries resolve through `GuardedResolver`, which
//! answers only checked addresses, and the client connects to exactly those (a DNS answer
//! that changes to a private address after the check, "DNS rebinding", is refused then).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// How long a host may take to resolve.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether `ip` is an address on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped().or_else(|| compatible_v4(v6)) {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

/// `::a.b.c.d` (deprecated IPv4-compatible), not `::` or `::1`.
fn compatible_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    (s[..6].iter().all(|&x| x == 0) && (s[6] != 0 || s[7] > 1)).then(|| {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    })
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || first == 0x0064 && ip.segments()[1] == 0xff9b) // NAT64 (reaches IPv4 space)
}

/// Why a target is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not a URL the server calls (scheme, host, credentials): 422 `invalid_request`.
    Invalid(String),
    /// The host does not resolve, or not to public addresses: 422 `webhook_target_refused`.
    Target(String),
}

/// The URL as the server will call it: `http`/`https`, a host, no credentials, no fragment.
pub fn parse_url(raw: &str) -> Result<Url, Refusal> {
    if raw.len() > 2048 {
        return Err(Refusal::Invalid(
            "url must be at most 2048 characters".into(),
        ));
    }
    let url =
        Url::parse(raw.trim()).map_err(|e| Refusal::Invalid(format!("url is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refusal::Invalid("url must be http:// or https://".into()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Refusal::Invalid("url must name a host".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refusal::Invalid(
            "url must not carry credentials (the signature authenticates the server)".into(),
        ));
    }
    if url.fragment().is_some() {
        return Err(Refusal::Invalid("url must not have a #fragment".into()));
    }
    Ok(url)
}

/// The addresses `url` resolves to, each checked (`allow_private`: every address passes).
pub async fn resolve_checked(url: &Url, allow_private: bool) -> Result<Vec<SocketAddr>, Refusal> {
    let host = url
        .host_str()
        .ok_or_else(|| Refusal::Invalid("url must name a host".into()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs = if let Ok(ip) = host.parse::<IpAddr>() {
        vec![SocketAddr::new(ip, port)]
    } else {
        let lookup = tokio::net::lookup_host((host.to_owned(), port));
        match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
            Ok(Ok(found)) => found.collect(),
            Ok(Err(e)) => {
                return Err(Refusal::Target(format!(
                    "the host {host} does not resolve: {e}"
                )))
            }
            Err(_) => {
                return Err(Refusal::Target(format!(
                    "the host {host} did not resolve within {} s",
                    RESOLVE_TIMEOUT.as_secs()
                )))
            }
        }
    };
    check_addrs(host, addrs, allow_private)
}

fn check_addrs(
    host: &str,
    addrs: Vec<SocketAddr>,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, Refusal> {
    if addrs.is_empty() {
        return Err(Refusal::Target(format!("the host {host} has no address")));
    }
    if !allow_private {
        if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
            return Err(Refusal::Target(format!(
                "the host {host} resolves to {}, which is not a public address \
                 (loopback, link-local and private ranges are refused unless \
                 webhooks.allow_private_targets is set)",
                bad.ip()
            )));
        }
    }
    Ok(addrs)
}

/// The delivery client's resolver: resolves, then answers only addresses that pass the check,
/// so the connection goes to a checked address.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let lookup = tokio::net::lookup_host((host.clone(), 0));
            let found: Vec<SocketAddr> = tokio::time::timeout(RESOLVE_TIMEOUT, lookup)
                .await
                .map_err(|_| format!("resolving {host} timed out"))??
                .collect();
            let checked = check_addrs(&host, found, allow_private).map_err(|r| match r {
                Refusal::Invalid(m) | Refusal::Target(m) => m,
            })?;
            let addrs: Addrs = Box::new(checked.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn non_public_ranges_are_refused_in_ipv4_and_ipv6_mapped_or_not() {
        for bad in [
            "127.0.0.1",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(ip(bad)), "{bad} must be refused");
        }
        for good in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip(good)), "{good} is public");
        }
    }

    #[test]
    fn urls_are_http_or_https_with_a_host_and_no_credentials() {
        assert!(parse_url("https://hooks.example.com/x").is_ok());
        for bad in [
            "ftp://example.com",
            "file:///etc/passwd",
            "https://user:pw@example.com/",
            "not a url",
            "https://example.com/#frag",
        ] {
            assert!(matches!(parse_url(bad), Err(Refusal::Invalid(_))), "{bad}");
        }
    }

    #[tokio::test]
    async fn literal_private_addresses_are_refused_unless_allowed() {
        let url = parse_url("http://127.0.0.1:9/hook").unwrap();
        assert!(matches!(
            resolve_checked(&url, false).await,
            Err(Refusal::Target(_))
        ));
        assert!(resolve_checked(&url, true).await.is_ok());
        let url = parse_url("http://[::ffff:192.168.0.1]/").unwrap();
        assert!(matches!(
            resolve_checked(&url, false).await,
            Err(Refusal::Target(_))
        ));
        let url = parse_url("http://localhost:9/").unwrap();
        assert!(matches!(
            resolve_checked(&url, false).await,
            Err(Refusal::Target(_))
        ));
    }
}
