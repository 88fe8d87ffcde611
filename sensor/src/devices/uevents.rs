//! The kernel's announcements of devices (uevents, on a netlink socket). A block device is
//! described when the kernel announces it, rather than found by listing `/sys/dev/block`
//! every second: a partition appears in the watch list the moment it exists, and an idle host
//! costs no listing.
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
    pub async fn block_devices_changed(&self) -> io::Result<()> {
        loop {
            let mut ready = self.socket.readable().await?;
            let changed = read_all(ready.get_inner())?;
            // Everything up to "would block" was read; a message after that sets it again.
            ready.clear_ready();
            if changed {
                return Ok(());
            }
        }
    }
}

/// Reads every waiting message; whether any was about a block device, or any was lost.
fn read_all(socket: &OwnedFd) -> io::Result<bool> {
    let mut changed = false;
    let mut message = [0u8; 8192];
    loop {
        match recv(socket.as_raw_fd(), &mut message, MsgFlags::empty()) {
            Ok(length) => changed |= is_block_device(&message[..length]),
            Err(Errno::EAGAIN) => return Ok(changed),
            Err(Errno::ENOBUFS) => changed = true,
            Err(Errno::EINTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
}

/// Whether a uevent ("ACTION@DEVPATH", then NUL-separated KEY=VALUE pairs) is about a block
/// device.
fn is_block_device(message: &[u8]) -> bool {
    message
        .split(|&byte| byte == 0)
        .skip(1)
        .any(|pair| pair == b"SUBSYSTEM=block")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_uevents_are_told_from_others() {
        let partition = b"add@/devices/virtual/block/loop7/loop7p1\0ACTION=add\0\
            DEVPATH=/devices/virtual/block/loop7/loop7p1\0SUBSYSTEM=block\0MAJOR=259\0\
            MINOR=0\0DEVNAME=loop7p1\0DEVTYPE=partition\0SEQNUM=4242\0";
        let network = b"add@/devices/virtual/net/veth0\0ACTION=add\0\
            DEVPATH=/devices/virtual/net/veth0\0SUBSYSTEM=net\0INTERFACE=veth0\0SEQNUM=4243\0";
        // The header alone names no subsystem, whatever its path says.
        let header_only = b"add@/SUBSYSTEM=block\0ACTION=add\0SUBSYSTEM=usb\0";
        assert!(is_block_device(partition));
        assert!(!is_block_device(network));
        assert!(!is_block_device(header_only));
    }
}
