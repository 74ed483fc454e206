//! Pod addresses: `<prefix>.2` to `<prefix>.254`, unique among the pods this kubelet runs. Allocation
//! goes round the range rather than taking the lowest free host, so an address freed by a deleted pod
//! is handed out again only after the others, as a CNI plugin's host-local IPAM does: a client still
//! holding the old pod's address does not reach its successor by accident.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::config::IpPrefix;

const FIRST_HOST: u8 = 2;
const LAST_HOST: u8 = 254;

/// The addresses in use and where the next search starts.
#[derive(Debug)]
pub struct IpAllocator {
    prefix: IpPrefix,
    used: BTreeSet<u8>,
    next: u8,
}

impl IpAllocator {
    pub fn new(prefix: IpPrefix) -> Self {
        Self {
            prefix,
            used: BTreeSet::new(),
            next: FIRST_HOST,
        }
    }

    /// A free address, or `None` when all 253 are taken.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let host = (self.next..=LAST_HOST)
            .chain(FIRST_HOST..self.next)
            .find(|host| !self.used.contains(host))?;
        self.used.insert(host);
        self.next = if host == LAST_HOST {
            FIRST_HOST
        } else {
            host + 1
        };
        Some(self.prefix.address(host))
    }

    /// Gives `ip` back; addresses outside the prefix are ignored.
    pub fn release(&mut self, ip: Ipv4Addr) {
        let [a, b, c, host] = ip.octets();
        if [a, b, c] == self.prefix.0 {
            self.used.remove(&host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allocator() -> IpAllocator {
        IpAllocator::new(IpPrefix([127, 77, 0]))
    }

    #[test]
    fn addresses_start_at_two_and_are_unique() {
        let mut ips = allocator();
        assert_eq!(ips.allocate(), Some(Ipv4Addr::new(127, 77, 0, 2)));
        assert_eq!(ips.allocate(), Some(Ipv4Addr::new(127, 77, 0, 3)));
    }

    #[test]
    fn a_freed_address_comes_back_after_the_others() {
        let mut ips = allocator();
        let first = ips.allocate();
        assert_eq!(first, Some(Ipv4Addr::new(127, 77, 0, 2)));
        ips.release(Ipv4Addr::new(127, 77, 0, 2));
        assert_eq!(ips.allocate(), Some(Ipv4Addr::new(127, 77, 0, 3)));
        for _ in 4..=254 {
            assert!(ips.allocate().is_some());
        }
        // everything else is taken now: the freed .2 is reused
        assert_eq!(ips.allocate(), Some(Ipv4Addr::new(127, 77, 0, 2)));
        assert_eq!(ips.allocate(), None);
        ips.release(Ipv4Addr::new(127, 77, 0, 100));
        assert_eq!(ips.allocate(), Some(Ipv4Addr::new(127, 77, 0, 100)));
    }

    #[test]
    fn foreign_addresses_are_not_released() {
        let mut ips = allocator();
        let _ = ips.allocate();
        ips.release(Ipv4Addr::new(127, 78, 0, 2));
        assert_eq!(ips.allocate(), Some(Ipv4Addr::new(127, 77, 0, 3)));
    }
}
