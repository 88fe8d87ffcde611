//! The network filters, applied in the kernel: by address (CIDR), port, user and command name.
use aya_ebpf::{helpers::bpf_get_current_uid_gid, maps::lpm_trie::Key};
use sensor_common::{
    address_family::INET as AF_INET, filter_action, network_flags as nf, NetworkRecord,
};

use super::socket::rule_address;
use crate::{
    kread::current_comm,
    maps::{NETWORK_ADDRS, NETWORK_COMMS, NETWORK_PORTS, NETWORK_UIDS},
};

/// Applies one filter dimension: an exclude match drops; with includes present, so does no match.
#[inline(always)]
fn keep(action: Option<u32>, flags: u32, includes: u32) -> bool {
    match action {
        Some(filter_action::EXCLUDE) => false,
        Some(_) => true,
        None => flags & includes == 0,
    }
}

/// Whether the caller's record passes the rules; Unix sockets have no address or port.
#[inline(always)]
pub fn passes(flags: u32, record: &NetworkRecord, inet: bool) -> bool {
    if flags & nf::UID_RULES != 0 {
        let uid = bpf_get_current_uid_gid() as u32;
        // SAFETY: the value is copied at once; a concurrent rewrite gives the old or new rule.
        let action = unsafe { NETWORK_UIDS.get(&uid) }.copied();
        if !keep(action, flags, nf::UID_INCLUDES) {
            return false;
        }
    }
    if flags & nf::COMM_RULES != 0 {
        let comm = current_comm();
        // SAFETY: as above.
        let action = unsafe { NETWORK_COMMS.get(&comm) }.copied();
        if !keep(action, flags, nf::COMM_INCLUDES) {
            return false;
        }
    }
    if !inet {
        return true;
    }
    let (addr, port) = rule_address(record);
    if flags & nf::PORT_RULES != 0 {
        // SAFETY: as above.
        let action = unsafe { NETWORK_PORTS.get(&port) }.copied();
        if !keep(action, flags, nf::PORT_INCLUDES) {
            return false;
        }
    }
    if flags & nf::ADDR_RULES != 0 {
        let key = Key::new(128, mapped_address(record.family, addr));
        let action = NETWORK_ADDRS.get(&key).copied();
        if !keep(action, flags, nf::ADDR_INCLUDES) {
            return false;
        }
    }
    true
}

/// The address as IPv6, IPv4 as `::ffff:a.b.c.d`, as the daemon writes the rules.
#[inline(always)]
fn mapped_address(family: u16, addr: &[u8; 16]) -> [u8; 16] {
    if family != AF_INET {
        return *addr;
    }
    let mut mapped = [0u8; 16];
    mapped[10] = 0xff;
    mapped[11] = 0xff;
    mapped[12..].copy_from_slice(&addr[..4]);
    mapped
}
