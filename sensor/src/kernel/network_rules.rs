//! Network filter rules: resolved from `[network]`, then written into the kernel maps. As for
//! the file rules, everything is resolved before anything is written, so a bad rule is refused
//! whole and the rules in force stay.
use std::net::IpAddr;

use anyhow::{Context as _, Result};
use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData},
    Ebpf,
};
use ipnet::IpNet;
use sensor_common::{
    network_flags as nf, NetworkFilterConfig, NETWORK_ADDRS_MAP, NETWORK_COMMS_MAP,
    NETWORK_FILTER_MAP, NETWORK_PORTS_MAP, NETWORK_UIDS_MAP,
};

use super::filters::{comm_key, dimension, replace, replace_trie, tagged, uid_of};
use crate::config::NetworkConfig;

/// Network rules in kernel form.
#[derive(Debug, Default, PartialEq)]
pub struct NetworkRules {
    pub config: NetworkFilterConfig,
    /// (prefix length over the IPv6 form, address as IPv6) to action.
    pub addrs: Vec<((u32, [u8; 16]), u32)>,
    pub ports: Vec<(u16, u32)>,
    pub uids: Vec<(u32, u32)>,
    pub comms: Vec<([u8; 16], u32)>,
}

/// Resolves `[network]`; `enabled` is the sensor switch.
pub fn resolve(enabled: bool, network: &NetworkConfig) -> Result<NetworkRules> {
    let mut flags = 0;
    if enabled {
        flags |= nf::ENABLED;
    }
    if network.loopback {
        flags |= nf::LOOPBACK;
    }
    let addrs = tagged(
        &network.include_addresses,
        &network.exclude_addresses,
        |a| address_rule(a),
    )?;
    let ports = tagged(&network.include_ports, &network.exclude_ports, |p| Ok(*p))?;
    let uids = tagged(&network.include_users, &network.exclude_users, |u| {
        uid_of(u).context("network user rule")
    })?;
    let comms = tagged(&network.include_comms, &network.exclude_comms, |c| {
        Ok(comm_key(c))
    })?;
    flags |= dimension(&addrs, nf::ADDR_RULES, nf::ADDR_INCLUDES);
    flags |= dimension(&ports, nf::PORT_RULES, nf::PORT_INCLUDES);
    flags |= dimension(&uids, nf::UID_RULES, nf::UID_INCLUDES);
    flags |= dimension(&comms, nf::COMM_RULES, nf::COMM_INCLUDES);
    Ok(NetworkRules {
        config: NetworkFilterConfig {
            flags,
            _pad: 0,
            dedup_window_ns: network.dedup_window_ms.saturating_mul(1_000_000),
        },
        addrs,
        ports,
        uids,
        comms,
    })
}

/// A CIDR or a single address, as the kernel's trie key: IPv4 as IPv4-mapped IPv6.
pub fn address_rule(text: &str) -> Result<(u32, [u8; 16])> {
    let net: IpNet = match text.parse::<IpAddr>() {
        Ok(addr) => addr.into(),
        Err(_) => text.parse().with_context(|| {
            format!("network address rule {text:?}: not an address or CIDR (like 10.0.0.0/8)")
        })?,
    };
    let net = net.trunc();
    Ok(match net {
        IpNet::V4(v4) => (
            96 + u32::from(v4.prefix_len()),
            v4.network().to_ipv6_mapped().octets(),
        ),
        IpNet::V6(v6) => (u32::from(v6.prefix_len()), v6.network().octets()),
    })
}

/// The network sensor's maps, taken from the loaded object.
pub struct NetworkMaps {
    config: Array<MapData, NetworkFilterConfig>,
    addrs: LpmTrie<MapData, [u8; 16], u32>,
    ports: HashMap<MapData, u16, u32>,
    uids: HashMap<MapData, u32, u32>,
    comms: HashMap<MapData, [u8; 16], u32>,
    /// The [`nf`] bits the attached hooks allow (`COMPLETIONS`, `SOCKET_ENDS`).
    hook_flags: u32,
}

impl NetworkMaps {
    pub fn take(ebpf: &mut Ebpf, hook_flags: u32) -> Result<Self> {
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .with_context(|| format!("map {name} missing from the object"))
        };
        Ok(Self {
            config: Array::try_from(take(NETWORK_FILTER_MAP)?)?,
            addrs: LpmTrie::try_from(take(NETWORK_ADDRS_MAP)?)?,
            ports: HashMap::try_from(take(NETWORK_PORTS_MAP)?)?,
            uids: HashMap::try_from(take(NETWORK_UIDS_MAP)?)?,
            comms: HashMap::try_from(take(NETWORK_COMMS_MAP)?)?,
            hook_flags,
        })
    }

    /// Replaces the rules in force; the settings word goes last, and while the maps change
    /// the kernel consults none of them.
    pub fn apply(&mut self, rules: &NetworkRules) -> Result<()> {
        let mut staged = rules.config;
        staged.flags &= !(nf::ADDR_RULES | nf::PORT_RULES | nf::UID_RULES | nf::COMM_RULES);
        self.config
            .set(0, staged, 0)
            .context("updating network settings")?;
        let addr_keys: Vec<(Key<[u8; 16]>, u32)> = rules
            .addrs
            .iter()
            .map(|((prefix_len, addr), action)| (Key::new(*prefix_len, *addr), *action))
            .collect();
        replace_trie(&mut self.addrs, &addr_keys).context("updating address rules")?;
        replace(&mut self.ports, &rules.ports).context("updating port rules")?;
        replace(&mut self.uids, &rules.uids).context("updating network user rules")?;
        replace(&mut self.comms, &rules.comms).context("updating network comm rules")?;
        let mut config = rules.config;
        config.flags |= self.hook_flags;
        self.config
            .set(0, config, 0)
            .context("updating network settings")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_and_addresses_become_ipv6_trie_keys() {
        let (len, addr) = address_rule("10.1.2.3/8").unwrap();
        assert_eq!(len, 104);
        assert_eq!(&addr[10..], &[0xff, 0xff, 10, 0, 0, 0]);
        assert_eq!(address_rule("192.0.2.7").unwrap().0, 128);
        let (len, addr) = address_rule("2001:db8::/32").unwrap();
        assert_eq!((len, &addr[..4]), (32, &[0x20, 0x01, 0x0d, 0xb8][..]));
        let err = address_rule("10.0.0.0/33").unwrap_err();
        assert!(format!("{err:#}").contains("CIDR"), "{err:#}");
    }

    #[test]
    fn rules_set_their_dimension_flags() {
        let network = NetworkConfig {
            exclude_addresses: vec!["10.0.0.0/8".into()],
            include_ports: vec![443],
            exclude_users: vec!["0".into()],
            ..NetworkConfig::default()
        };
        let rules = resolve(true, &network).unwrap();
        let f = rules.config.flags;
        assert_ne!(f & nf::ADDR_RULES, 0);
        assert_eq!(f & nf::ADDR_INCLUDES, 0);
        assert_ne!(f & nf::PORT_INCLUDES, 0);
        assert_ne!(f & nf::UID_RULES, 0);
        assert_eq!(f & nf::COMM_RULES, 0);
        assert_eq!(rules.config.dedup_window_ns, 5_000_000_000);
        let both = NetworkConfig {
            include_ports: vec![22],
            exclude_ports: vec![22],
            ..NetworkConfig::default()
        };
        assert!(resolve(true, &both).is_err());
    }
}
