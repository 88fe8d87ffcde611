//! The network family: connect, accept, listen, bind and close records to
//! `NetworkConnection` events.
use std::net::{Ipv4Addr, Ipv6Addr};

use custos_proto::v1::{event::Body, Event, NetworkConnection, NetworkOperation};
use sensor_common::{
    address_family::{INET6 as AF_INET6, UNIX as AF_UNIX},
    network_op, syscalls, NetworkRecord, IPPROTO_TCP, IPPROTO_UDP,
};

use super::{errno_name, Enricher};
use crate::{identity::NameSource, privacy::pseudonym::Pseudonymizer, text::escape_invalid_utf8};

impl<S: NameSource> Enricher<S> {
    pub(crate) fn network(&mut self, record: &NetworkRecord) -> Event {
        let task = &record.task;
        let (exec_id, process) = self.acting_process(task);
        let body = Body::Network(connection(record));
        self.shared_envelope(record.header.ktime_ns, task, &exec_id, process, body)
    }
}

/// A Unix socket under a home directory names its owner; addresses are kept as they are
/// (privacy-report says so).
pub(crate) fn pseudonymise(connection: &mut NetworkConnection, p: &Pseudonymizer) {
    connection.unix_path = p.home_path(&connection.unix_path);
}

/// The schema's NetworkConnection from a kernel record.
fn connection(record: &NetworkRecord) -> NetworkConnection {
    let operation = match record.op {
        network_op::CONNECT => NetworkOperation::Connect,
        network_op::ACCEPT => NetworkOperation::Accept,
        network_op::LISTEN => NetworkOperation::Listen,
        network_op::CLOSE => NetworkOperation::Close,
        network_op::BIND => NetworkOperation::Bind,
        network_op::SHARED_SEND => NetworkOperation::SharedSend,
        _ => NetworkOperation::Unspecified,
    };
    let errno = (record.ret < 0).then(|| record.ret.unsigned_abs());
    let local_only = matches!(operation, NetworkOperation::Listen | NetworkOperation::Bind);
    let unix = record.family == AF_UNIX;
    NetworkConnection {
        operation: operation as i32,
        syscall: syscalls::watched(record.syscall)
            .map_or("unknown", |s| s.name)
            .to_owned(),
        family: family_name(record.family).to_owned(),
        protocol: if unix {
            String::new()
        } else {
            protocol_name(record.protocol)
        },
        local_address: if unix {
            String::new()
        } else {
            address(record.family, &record.local_addr)
        },
        local_port: record.local_port.into(),
        remote_address: if local_only || unix {
            String::new()
        } else {
            address(record.family, &record.remote_addr)
        },
        remote_port: if local_only {
            0
        } else {
            record.remote_port.into()
        },
        socket_inode: record.ino,
        fd: record.fd,
        errno,
        error: errno.map(errno_name).unwrap_or_default(),
        unix_path: unix_path(record),
        duration_ns: record.duration_ns,
        bytes_sent: record.bytes_sent,
        bytes_received: record.bytes_received,
        repeats: 0,
        repeat_summary: false,
    }
}

fn family_name(family: u16) -> &'static str {
    match family {
        AF_INET6 => "ipv6",
        AF_UNIX => "unix",
        _ => "ipv4",
    }
}

/// A Unix socket path as text: a pathname up to its NUL, an abstract name as "@name".
fn unix_path(record: &NetworkRecord) -> String {
    let len = (record.unix_path_len as usize).min(record.unix_path.len());
    let bytes = &record.unix_path[..len];
    match bytes.split_first() {
        None => String::new(),
        Some((0, name)) => format!("@{}", escape_invalid_utf8(name)),
        Some(_) => {
            let end = bytes.iter().position(|b| *b == 0).unwrap_or(len);
            escape_invalid_utf8(&bytes[..end])
        }
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
        let task = crate::families::tests::task(1);
        let mut record = crate::families::tests::tcp_record(task, network_op::CONNECT);
        record.syscall = syscalls::CONNECT;
        record.ret = -111;
        record.fd = 3;
        record.remote_port = 8080;
        record.ino = 42;
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
        record.family = AF_UNIX;
        record.op = network_op::CONNECT;
        record.unix_path[..13].copy_from_slice(b"/run/x.sock\0\0");
        record.unix_path_len = 13;
        let unix = connection(&record);
        assert_eq!(
            (unix.family.as_str(), unix.unix_path.as_str()),
            ("unix", "/run/x.sock")
        );
        assert_eq!(
            (unix.protocol.as_str(), unix.remote_address.as_str()),
            ("", "")
        );
        record.unix_path[..5].copy_from_slice(b"\0bus\xff");
        record.unix_path_len = 5;
        assert_eq!(connection(&record).unix_path, "@bus\\xff");
    }

    #[test]
    fn a_unix_socket_under_a_home_directory_is_pseudonymised() {
        let mut connection = NetworkConnection {
            unix_path: "/home/alice/.gnupg/S.gpg-agent".into(),
            remote_address: "192.0.2.7".into(),
            ..NetworkConnection::default()
        };
        pseudonymise(&mut connection, &Pseudonymizer::hiding());
        assert!(!connection.unix_path.contains("alice"), "{connection:?}");
        assert!(connection.unix_path.ends_with("/.gnupg/S.gpg-agent"));
        assert_eq!(connection.remote_address, "192.0.2.7");
    }
}
