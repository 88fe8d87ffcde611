//! The kernel's announcements of devices (uevents, on a netlink socket). A block device is
//! described when the kernel announces it, rather than found by listing `/sys/dev/block`
//! every second: a partition appears in the watch list the moment it exists, is forgotten
//! when it goes (no hook reports that, and its number goes to the next partition made), and
//! an idle host costs no listing.
use std::{
    io,
    os::fd::{AsRawFd, OwnedFd},
};

use nix::{
    errno::Errno,
    sys::socket::{
        bind, recv, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
        SockProtocol, SockType,
    },
};
use tokio::io::{unix::AsyncFd, Interest};

/// The multicast group the kernel sends its uevents to (udev's own are group 2).
const KERNEL_GROUP: u32 = 1;

/// Room for a burst of announcements (a hub of drives, each with partitions) between reads.
const RECEIVE_BUFFER: usize = 1 << 20;

/// A netlink socket on the kernel's uevents.
pub struct Uevents {
    socket: AsyncFd<OwnedFd>,
}

impl Uevents {
    pub fn open() -> io::Result<Self> {
        let socket = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkKObjectUEvent,
        )?;
        // Above the system's limit when allowed (root), else up to it.
        if setsockopt(&socket, sockopt::RcvBufForce, &RECEIVE_BUFFER).is_err() {
            let _ = setsockopt(&socket, sockopt::RcvBuf, &RECEIVE_BUFFER);
        }
        bind(socket.as_raw_fd(), &NetlinkAddr::new(0, KERNEL_GROUP))?;
        // SAFETY: the AsyncFd owns the socket's OwnedFd, so the fd stays open, and the same,
        // for as long as it is registered.
        let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self { socket })
    }

    /// Returns when the block devices should be listed again: one was added, changed or
    /// removed, or announcements were lost (the socket's buffer overflowed).
    pub async fn block_devices_changed(&self) -> io::Result<BlockChanges> {
        loop {
            let mut ready = self.socket.readable().await?;
            let changes = read_all(ready.get_inner())?;
            // Everything up to "would block" was read; a message after that sets it again.
            ready.clear_ready();
            if changes.relist {
                return Ok(changes);
            }
        }
    }
}

/// What the kernel announced about block devices since the socket was last read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BlockChanges {
    /// A block device came, changed or went, or announcements were lost.
    pub relist: bool,
    /// Partitions that went away, as (major, minor), in order: no hook reports their removal,
    /// and their numbers go to the next partitions made.
    pub partitions_removed: Vec<(u32, u32)>,
}

/// Reads every waiting message.
fn read_all(socket: &OwnedFd) -> io::Result<BlockChanges> {
    let mut changes = BlockChanges::default();
    let mut message = [0u8; 8192];
    loop {
        match recv(socket.as_raw_fd(), &mut message, MsgFlags::empty()) {
            Ok(length) => changes.note(&message[..length]),
            Err(Errno::EAGAIN) => return Ok(changes),
            Err(Errno::ENOBUFS) => changes.relist = true,
            Err(Errno::EINTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
}

impl BlockChanges {
    /// Takes in one uevent: "ACTION@DEVPATH", then NUL-separated KEY=VALUE pairs.
    fn note(&mut self, message: &[u8]) {
        let value = |key: &[u8]| {
            message.split(|&byte| byte == 0).skip(1).find_map(|pair| {
                pair.strip_prefix(key)
                    .and_then(|rest| rest.strip_prefix(b"="))
            })
        };
        if value(b"SUBSYSTEM") != Some(b"block") {
            return;
        }
        self.relist = true;
        if value(b"ACTION") == Some(b"remove") && value(b"DEVTYPE") == Some(b"partition") {
            let number = |key| std::str::from_utf8(value(key)?).ok()?.parse().ok();
            if let (Some(major), Some(minor)) = (number(b"MAJOR"), number(b"MINOR")) {
                self.partitions_removed.push((major, minor));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_uevents_call_for_a_listing_and_removed_partitions_are_named() {
        let mut changes = BlockChanges::default();
        changes.note(
            b"add@/devices/virtual/net/veth0\0ACTION=add\0DEVPATH=/devices/virtual/net/veth0\0\
              SUBSYSTEM=net\0INTERFACE=veth0\0SEQNUM=4243\0",
        );
        // The header alone names no subsystem, whatever its path says.
        changes.note(b"add@/SUBSYSTEM=block\0ACTION=add\0SUBSYSTEM=usb\0");
        assert_eq!(changes, BlockChanges::default());
        changes.note(
            b"add@/devices/virtual/block/loop7/loop7p1\0ACTION=add\0SUBSYSTEM=block\0\
              MAJOR=259\0MINOR=0\0DEVNAME=loop7p1\0DEVTYPE=partition\0SEQNUM=4242\0",
        );
        assert!(changes.relist);
        assert!(changes.partitions_removed.is_empty());
        // A disk's removal is the hooks' to report; a partition's only comes here.
        changes.note(
            b"remove@/devices/virtual/block/loop7\0ACTION=remove\0SUBSYSTEM=block\0\
              MAJOR=7\0MINOR=7\0DEVNAME=loop7\0DEVTYPE=disk\0SEQNUM=4250\0",
        );
        changes.note(
            b"remove@/devices/virtual/block/loop7/loop7p1\0ACTION=remove\0SUBSYSTEM=block\0\
              MAJOR=259\0MINOR=0\0DEVNAME=loop7p1\0DEVTYPE=partition\0SEQNUM=4249\0",
        );
        assert_eq!(changes.partitions_removed, vec![(259, 0)]);
    }
}
