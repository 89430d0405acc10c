//! The stand-in's state: the address pool (127.0.1.1 upwards, skipping .0 and .255 like network and
//! broadcast addresses) and what each Service holds.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;

use super::LbError;
use super::forward::Listener;

/// What the stand-in holds: the addresses it gave out and the listeners on them.
#[derive(Default)]
pub(super) struct State {
    /// Service key (namespace/name) -> its address.
    pub(super) addresses: HashMap<String, Ipv4Addr>,
    /// Service key -> its listeners by front address.
    pub(super) listeners: HashMap<String, HashMap<SocketAddr, Listener>>,
    /// Services held pending (announced once per transition).
    pub(super) pending: HashSet<String>,
    /// Services whose backend annotation was reported invalid (value), to report once.
    pub(super) bad_backend: HashMap<String, String>,
}

impl State {
    /// The Service's address: the one it has, else `adopt` (the address in its status) when that
    /// is free and in the pool, else the first free one.
    pub(super) fn allocate(
        &mut self,
        key: &str,
        adopt: Option<IpAddr>,
    ) -> Result<Ipv4Addr, LbError> {
        if let Some(ip) = self.addresses.get(key) {
            return Ok(*ip);
        }
        let used: HashSet<Ipv4Addr> = self.addresses.values().copied().collect();
        if let Some(IpAddr::V4(ip)) = adopt
            && in_pool(ip)
            && !used.contains(&ip)
        {
            self.addresses.insert(key.to_owned(), ip);
            return Ok(ip);
        }
        let mut n: u32 = 0x7f00_0101; // 127.0.1.1
        while n <= 0x7f00_fffe {
            let ip = Ipv4Addr::from(n);
            let last = ip.octets()[3];
            if last != 0 && last != 255 && !used.contains(&ip) {
                self.addresses.insert(key.to_owned(), ip);
                return Ok(ip);
            }
            n += 1;
        }
        Err(LbError::PoolExhausted)
    }

    /// Forgets the Service: its address goes back to the pool, its listeners close.
    pub(super) fn release(&mut self, key: &str) {
        self.bad_backend.remove(key);
        self.pending.remove(key);
        if let Some(ip) = self.addresses.remove(key) {
            tracing::info!(service = %key, %ip, "released the load-balancer address");
        }
        if let Some(ls) = self.listeners.remove(key) {
            for front in ls.keys() {
                tracing::info!(service = %key, %front, "stopped forwarding");
            }
        }
    }
}

/// `namespace/name`: a Service's key in the state.
pub(super) fn key_of(svc: &Service) -> String {
    format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any())
}

fn in_pool(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] == 127 && o[1] == 0 && o[2] >= 1 && o[3] != 0 && o[3] != 255
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_is_distinct_stable_and_adopts() {
        let mut s = State::default();
        let a = s.allocate("ns/a", None).unwrap();
        let b = s.allocate("ns/b", None).unwrap();
        assert_ne!(a, b);
        assert_eq!(a, Ipv4Addr::new(127, 0, 1, 1));
        assert_eq!(s.allocate("ns/a", None).unwrap(), a);
        // adopt an address already in a status, unless taken or outside the pool
        let c = s
            .allocate("ns/c", Some("127.0.3.7".parse().unwrap()))
            .unwrap();
        assert_eq!(c, Ipv4Addr::new(127, 0, 3, 7));
        let d = s.allocate("ns/d", Some(IpAddr::V4(a))).unwrap();
        assert_ne!(d, a);
        let e = s
            .allocate("ns/e", Some("10.0.0.1".parse().unwrap()))
            .unwrap();
        assert!(in_pool(e));
        s.release("ns/a");
        assert_eq!(
            s.allocate("ns/f", None).unwrap(),
            a,
            "a released address is reused"
        );
    }

    #[test]
    fn skips_network_and_broadcast_like_octets() {
        let mut s = State::default();
        for i in 0..300 {
            let ip = s.allocate(&format!("ns/{i}"), None).unwrap();
            assert!(in_pool(ip), "{ip}");
        }
    }
}
