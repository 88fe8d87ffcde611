//! The network family: connect, accept and listen records to `NetworkConnection` events.
use std::net::{Ipv4Addr, Ipv6Addr};

use custos_proto::v1::{event::Body, Event, NetworkConnection, NetworkOperation};
use sensor_common::{address_family::INET6 as AF_INET6, network_op, syscalls, NetworkRecord};

use super::{errno_name, Enricher};
use crate::identity::NameSource;

const IPPROTO_TCP: u16 = 6;
const IPPROTO_UDP: u16 = 17;

impl<S: NameSource> Enricher<S> {
    pub(crate) fn network(&mut self, record: &NetworkRecord) -> Event {
        let task = &record.task;
        let (exec_id, process) = self.acting_process(task);
        let body = Body::Network(connection(record));
        self.envelope(record.header.ktime_ns, task, &exec_id, process, body)
    }
}

/// The schema's NetworkConnection from a kernel record.
fn connection(record: &NetworkRecord) -> NetworkConnection {
    let operation = match record.op {
        network_op::CONNECT => NetworkOperation::Connect,
        network_op::ACCEPT => NetworkOperation::Accept,
        network_op::LISTEN => NetworkOperation::Listen,
        _ => NetworkOperation::Unspecified,
    };
    let errno = (record.ret < 0).then(|| record.ret.unsigned_abs());
    let listening = operation == NetworkOperation::Listen;
    NetworkConnection {
        operation: operation as i32,
        syscall: syscalls::watched(record.syscall)
            .map_or("unknown", |s| s.name)
            .to_owned(),
        family: if record.family == AF_INET6 {
            "ipv6"
        } else {
            "ipv4"
        }
        .to_owned(),
        protocol: protocol_name(record.protocol),
        local_address: address(record.family, &record.local_addr),
        local_port: record.local_port.into(),
        remote_address: if listening {
            String::new()
        } else {
            address(record.family, &record.remote_addr)
        },
        remote_port: if listening {
            0
        } else {
            record.remote_port.into()
        },
        socket_inode: record.ino,
        fd: record.fd,
        errno,
        error: errno.map(errno_name).unwrap_or_default(),
    }
}

fn protocol_name(protocol: u16) -> String {
    match protocol {
        IPPROTO_TCP => "tcp".to_owned(),
        IPPROTO_UDP => "udp".to_owned(),
        other => other.to_string(),
    }
}

/// An address as text: the first 4 bytes for IPv4, all 16 for IPv6.
fn address(family: u16, bytes: &[u8; 16]) -> String {
    if family == AF_INET6 {
        Ipv6Addr::from(*bytes).to_string()
    } else {
        Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_ports_and_errors_read_as_people_write_them() {
        let mut record = NetworkRecord {
            header: sensor_common::RecordHeader::default(),
            task: crate::families::tests::task(1),
            op: network_op::CONNECT,
            syscall: syscalls::CONNECT,
            ret: -111,
            fd: 3,
            family: sensor_common::address_family::INET,
            protocol: IPPROTO_TCP,
            local_port: 0,
            remote_port: 8080,
            local_addr: [0; 16],
            remote_addr: [0; 16],
            ino: 42,
        };
        record.remote_addr[..4].copy_from_slice(&[192, 0, 2, 7]);
        let body = connection(&record);
        assert_eq!(body.operation(), NetworkOperation::Connect);
        assert_eq!(body.syscall, "connect");
        assert_eq!(
            (body.family.as_str(), body.protocol.as_str()),
            ("ipv4", "tcp")
        );
        assert_eq!(
            (body.remote_address.as_str(), body.remote_port),
            ("192.0.2.7", 8080)
        );
        assert_eq!(
            (body.errno, body.error.as_str()),
            (Some(111), "ECONNREFUSED")
        );
        record.family = AF_INET6;
        record.remote_addr = Ipv6Addr::LOCALHOST.octets();
        record.op = network_op::LISTEN;
        let listen = connection(&record);
        assert_eq!(
            (listen.family.as_str(), listen.remote_address.as_str()),
            ("ipv6", "")
        );
        assert_eq!(address(AF_INET6, &Ipv6Addr::LOCALHOST.octets()), "::1");
    }
}
