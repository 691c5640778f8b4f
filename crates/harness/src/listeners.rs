//! The kernel's list of listening TCP sockets through sock_diag netlink
//! (what `ss -lt` reads), not /proc/net/tcp: asked for listeners only, the
//! kernel walks its listening table alone, while /proc/net/tcp lists every
//! TIME_WAIT socket too (tens of thousands on a machine running loads, and
//! most of a second to read).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const TCP_LISTEN: u32 = 10;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct SockId {
    sport: [u8; 2],
    dport: [u8; 2],
    src: [u8; 16],
    dst: [u8; 16],
    ifindex: u32,
    cookie: [u32; 2],
}

#[repr(C)]
struct Request {
    nlh: libc::nlmsghdr,
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: SockId,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Msg {
    family: u8,
    state: u8,
    timer: u8,
    retrans: u8,
    id: SockId,
    expires: u32,
    rqueue: u32,
    wqueue: u32,
    uid: u32,
    inode: u32,
}

/// One listening socket: its address, inode and accept queue length.
#[derive(Clone, Copy, Debug)]
pub struct Listener {
    pub addr: SocketAddr,
    pub inode: u64,
    pub queued: u32,
}

/// Every listening TCP socket (IPv4 and IPv6) of the calling thread's
/// network namespace.
pub fn all() -> std::io::Result<Vec<Listener>> {
    let mut out = Vec::new();
    for family in [libc::AF_INET, libc::AF_INET6] {
        dump(family as u8, &mut out)?;
    }
    Ok(out)
}

fn dump(family: u8, out: &mut Vec<Listener>) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain system calls on a socket this function owns; the
    // buffers passed are valid for the lengths given.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let tv = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
        let mut req: Request = std::mem::zeroed();
        req.nlh.nlmsg_len = std::mem::size_of::<Request>() as u32;
        req.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
        req.nlh.nlmsg_flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
        req.family = family;
        req.protocol = libc::IPPROTO_TCP as u8;
        req.states = 1 << TCP_LISTEN;
        let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
        kernel.nl_family = libc::AF_NETLINK as u16;
        let sent = libc::sendto(
            fd.as_raw_fd(),
            (&req as *const Request).cast(),
            std::mem::size_of::<Request>(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        );
        if sent < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0);
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut at = 0usize;
            let n = n as usize;
            let hdr = std::mem::size_of::<libc::nlmsghdr>();
            while at + hdr <= n {
                let h: libc::nlmsghdr = std::ptr::read_unaligned(buf[at..].as_ptr().cast());
                let len = h.nlmsg_len as usize;
                if len < hdr || at + len > n {
                    break;
                }
                match h.nlmsg_type as libc::c_int {
                    libc::NLMSG_DONE => return Ok(()),
                    libc::NLMSG_ERROR => {
                        let e: i32 = std::ptr::read_unaligned(buf[at + hdr..].as_ptr().cast());
                        return Err(std::io::Error::from_raw_os_error(-e));
                    }
                    _ if len >= hdr + std::mem::size_of::<Msg>() => {
                        let m: Msg = std::ptr::read_unaligned(buf[at + hdr..].as_ptr().cast());
                        if m.state as u32 == TCP_LISTEN {
                            out.push(Listener {
                                addr: address(m.family, &m.id),
                                inode: m.inode as u64,
                                queued: m.rqueue,
                            });
                        }
                    }
                    _ => {}
                }
                at += (len + 3) & !3;
            }
        }
    }
}

fn address(family: u8, id: &SockId) -> SocketAddr {
    let port = u16::from_be_bytes(id.sport);
    let ip = if family as i32 == libc::AF_INET {
        let b = &id.src;
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(id.src))
    };
    SocketAddr::new(ip, port)
}
