//! The client's own address behind a trusted proxy: a connection from an address in
//! `listen.trusted_proxies` may start with a PROXY protocol v2 header (HAProxy's
//! `send-proxy-v2`), and the source address it carries is then the peer the relay admits,
//! counts, throttles and logs. Without it, every client behind the proxy would share one
//! address, and one guesser would lock them all out. The header is optional from a trusted
//! proxy (its health checks and an operator's `curl` on the colour's port need none) and never
//! believed from anyone else: a header from an address the setting does not name (a proxy
//! left out of it) is refused with a warning, not read as the client's first message (each of
//! HAProxy's health checks then counted as a failed authentication from the proxy's address,
//! which locked `relay health` on loopback out). Parsing is the `ppp` crate's.

use std::net::SocketAddr;

use ipnet::IpNet;
use ppp::v2::{Addresses, Command, Header, PROTOCOL_PREFIX};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The most a header may carry after its 16 fixed bytes (addresses and TLVs): HAProxy's are
/// well under this.
const MAX_PAYLOAD: usize = 1024;

/// The fixed part of a v2 header: signature, version and command, family, payload length.
const MINIMUM_LENGTH: usize = 16;

/// Why a trusted proxy's header was refused (the connection is closed).
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The connection failed while the header was read.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    /// The header does not parse or is too large.
    #[error("malformed PROXY v2 header: {0}")]
    Malformed(String),
    /// A header from a peer `listen.trusted_proxies` does not name.
    #[error("a PROXY v2 header from an address listen.trusted_proxies does not name; add the proxy's address there")]
    Untrusted,
}

/// The proxies whose PROXY headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// From `listen.trusted_proxies`, parsed.
    pub fn new(blocks: Vec<IpNet>) -> Self {
        Self(blocks)
    }

    /// Whether `peer` is one of them.
    pub fn trusts(&self, peer: SocketAddr) -> bool {
        let ip = match peer.ip() {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer.ip(), std::net::IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|block| block.contains(&ip))
    }

    /// The client `peer` stands for: the source of a PROXY v2 header at the start of `stream`
    /// when `peer` is trusted and sent one; `None` when the connection is `peer`'s own (no
    /// header, or a `LOCAL` one: a proxy's own checks). Consumes the header; leaves everything
    /// after it. A header from a peer not trusted is refused.
    pub async fn client_of(
        &self,
        stream: &mut TcpStream,
        peer: SocketAddr,
    ) -> Result<Option<SocketAddr>, ProxyHeaderError> {
        if !self.trusts(peer) {
            // One look at what arrived first, no wait for more: a stranger sending half a
            // signature must not keep the relay looking again until its deadline.
            return match starts_with_signature(stream, false).await? {
                true => Err(ProxyHeaderError::Untrusted),
                false => Ok(None),
            };
        }
        if !starts_with_signature(stream, true).await? {
            return Ok(None);
        }
        let mut fixed = [0u8; MINIMUM_LENGTH];
        stream.read_exact(&mut fixed).await?;
        let payload = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
        if payload > MAX_PAYLOAD {
            return Err(ProxyHeaderError::Malformed(format!("{payload} bytes of addresses")));
        }
        let mut whole = fixed.to_vec();
        whole.resize(MINIMUM_LENGTH + payload, 0);
        stream.read_exact(&mut whole[MINIMUM_LENGTH..]).await?;
        let header = Header::try_from(whole.as_slice()).map_err(|e| ProxyHeaderError::Malformed(e.to_string()))?;
        Ok(match (header.command, header.addresses) {
            (Command::Proxy, Addresses::IPv4(a)) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
            (Command::Proxy, Addresses::IPv6(a)) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
            // LOCAL (the proxy's own connection) or an address family without an IP.
            _ => None,
        })
    }
}

/// Whether the stream's first bytes are the PROXY v2 signature: with `wait_for_all`, waits
/// (peeking) until enough bytes arrived to tell (the caller's handshake deadline bounds the
/// wait); else the bytes of the first arrival decide (a part of the signature is not one).
async fn starts_with_signature(stream: &TcpStream, wait_for_all: bool) -> std::io::Result<bool> {
    let mut seen = [0u8; 12];
    loop {
        let n = stream.peek(&mut seen).await?;
        if n == 0 || seen[..n] != PROTOCOL_PREFIX[..n] {
            return Ok(false);
        }
        if n == PROTOCOL_PREFIX.len() {
            return Ok(true);
        }
        if !wait_for_all {
            return Ok(false);
        }
        // A partial signature: let more arrive.
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        (client, listener.accept().await.unwrap().0)
    }

    fn header(source: &str) -> Vec<u8> {
        let source: SocketAddr = source.parse().unwrap();
        let destination: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (source, destination),
        )
        .build()
        .unwrap()
    }

    #[tokio::test]
    async fn a_trusted_proxy_names_the_client_and_nobody_else_can() {
        let proxy: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let trusted = TrustedProxies::new(vec!["127.0.0.0/8".parse().unwrap()]);
        let (mut client, mut server) = pair().await;
        client.write_all(&header("203.0.113.7:5555")).await.unwrap();
        client.write_all(b"{\"jsonrpc\":\"2.0\"}\n").await.unwrap();
        assert_eq!(trusted.client_of(&mut server, proxy).await.unwrap(), Some("203.0.113.7:5555".parse().unwrap()));
        let mut rest = [0u8; 1];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"{", "what follows the header is left for the sniff");

        let (mut client, mut server) = pair().await;
        client.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(trusted.client_of(&mut server, proxy).await.unwrap(), None, "no header: the proxy itself");

        let stranger: SocketAddr = "198.51.100.1:1".parse().unwrap();
        let (mut client, mut server) = pair().await;
        client.write_all(&header("203.0.113.7:5555")).await.unwrap();
        let refused = trusted.client_of(&mut server, stranger).await;
        assert!(matches!(refused, Err(ProxyHeaderError::Untrusted)), "an untrusted header is refused: {refused:?}");
        let (mut client, mut server) = pair().await;
        client.write_all(b"{\"jsonrpc\":\"2.0\"}\n").await.unwrap();
        assert_eq!(trusted.client_of(&mut server, stranger).await.unwrap(), None, "a stranger's own connection");
        // Half a signature from a stranger is looked at once, not waited on.
        let (mut client, mut server) = pair().await;
        client.write_all(b"\r\n\r\n\0\r\n").await.unwrap();
        let looked =
            tokio::time::timeout(std::time::Duration::from_millis(500), trusted.client_of(&mut server, stranger));
        assert_eq!(looked.await.expect("no wait for the rest").unwrap(), None);
        assert!(!TrustedProxies::default().trusts(proxy));
    }
}
