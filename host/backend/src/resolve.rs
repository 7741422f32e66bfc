//! DNS for upstream connections, without SSRF.
//!
//! Rule: a loopback or private address is reachable only through a grant that
//! names that address literally (an IP literal, or `localhost`). A grant's
//! host *name* that resolves to such an address — a DNS rebinding trick, or a
//! name an attacker controls — is refused, so a guest cannot reach the
//! backend's own network through a public-looking grant.

use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use tower_service::Service;

/// The message of the error a private-only name produces (matched to
/// explain the refusal).
pub const PRIVATE_ONLY: &str = "the upstream name resolves only to loopback or private addresses";

/// Whether an address is on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // carrier-grade NAT
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19)) // benchmarking
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
}

/// A resolver that drops non-public addresses of names (but not of
/// `localhost`, which names loopback literally).
#[derive(Clone)]
pub struct PublicResolver<R = GaiResolver> {
    inner: R,
}

impl<R> PublicResolver<R> {
    /// Wrap a resolver.
    pub fn new(inner: R) -> PublicResolver<R> {
        PublicResolver { inner }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<R> Service<Name> for PublicResolver<R>
where
    R: Service<Name> + Send,
    R::Response: Iterator<Item = SocketAddr>,
    R::Error: Into<BoxError>,
    R::Future: Send + 'static,
{
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| std::io::Error::other(e.into()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let localhost = name.as_str().eq_ignore_ascii_case("localhost");
        let lookup = self.inner.call(name);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = lookup
                .await
                .map_err(|e| std::io::Error::other(e.into()))?
                .collect();
            if localhost {
                return Ok(addrs.into_iter());
            }
            let public: Vec<SocketAddr> = addrs.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    PRIVATE_ONLY,
                ));
            }
            Ok(public.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[derive(Clone)]
    struct Fixed(Vec<SocketAddr>);

    impl Service<Name> for Fixed {
        type Response = std::vec::IntoIter<SocketAddr>;
        type Error = std::io::Error;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: Name) -> Self::Future {
            std::future::ready(Ok(self.0.clone().into_iter()))
        }
    }

    fn addr(s: &str) -> SocketAddr {
        SocketAddr::new(s.parse().unwrap(), 443)
    }

    #[tokio::test]
    async fn names_resolving_to_private_addresses_are_refused() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.4",
            "169.254.169.254",
            "::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "100.64.0.1",
            "0.0.0.0",
        ] {
            let mut r = PublicResolver::new(Fixed(vec![addr(private)]));
            let err = r
                .call(Name::from_str("api.example.com").unwrap())
                .await
                .unwrap_err();
            assert_eq!(
                err.kind(),
                std::io::ErrorKind::PermissionDenied,
                "{private}"
            );
        }
        // Mixed answers keep only the public addresses.
        let mut r = PublicResolver::new(Fixed(vec![addr("10.0.0.1"), addr("93.184.216.34")]));
        let got: Vec<_> = r
            .call(Name::from_str("api.example.com").unwrap())
            .await
            .unwrap()
            .collect();
        assert_eq!(got, vec![addr("93.184.216.34")]);
        // `localhost` names loopback literally.
        let mut r = PublicResolver::new(Fixed(vec![addr("127.0.0.1")]));
        assert!(r.call(Name::from_str("localhost").unwrap()).await.is_ok());
    }
}
