// How two sdx processes on one host find each other for a TCP connection, without ever writing a
// byte onto a TCP stream whose peer has no sdx and without waiting on a peer that will not answer.
//
//   listen():  the listener binds an abstract unix socket named after its address and port
//              (abstract names belong to the network namespace: namespaces cannot be confused,
//              nothing is left on disk) and maps a small table shared with its fork()ed workers.
//   connect(): before the SYN, a connecting sdx process that finds such a socket creates the
//              connection's shared-memory segment and announces it there (pid, segment fd).  Once
//              the kernel picked its port it writes its address into the segment.  Later
//              connections to the same listener announce with one datagram to the listener's
//              datagram socket (same name, "sdx1d"), skipping the connect and the credentials check.
//   accept():  the accepting process (any worker) moves announcements from the unix socket into
//              the shared table, and looks for the one whose address is its new connection's peer.
//              Found: it attaches the segment (/proc/PID/fd/N) and accepts.  A peer without sdx
//              never announced, so nothing is waited for.
//   The segment's state word settles the outcome atomically (Announced -> Accepted, or ->
//   Withdrawn by a connecting side that waited `handshake_timeout`), so both ends always agree.
#pragma once

#include <sys/socket.h>

#include <memory>
#include <optional>
#include <string>

#include "verbs/shm_channel.hpp"

namespace sdx::rdv {

struct ListenerTable;
struct Announcement;

// A listener's rendezvous: the unix socket and the shared table.  Lives as long as the listening
// socket; inherited by fork.
class Listener {
public:
    // Nothing when the name is taken (another listener on the same address) or on any error.
    static Listener* open(const sockaddr* addr, socklen_t len);
    ~Listener();
    // The announcement of the connection whose peer is `peer`, attached and claimed.  Waits at
    // most `patience_ns` for announced peers that have not published their address yet (an sdx
    // process between its connect() and the next instruction: normally microseconds).
    // `*seen` receives the rendezvous word the claim is for: accepting it is a compare-and-swap
    // against exactly that word.
    std::optional<shm::Segment> claim(const sockaddr* peer, socklen_t len, pid_t* peer_pid, std::uint32_t* seen, long long patience_ns);

private:
    Listener() = default;
    void drain();
    void file(const Announcement& a);  // into the shared table
    // Whether `fd` is still the socket we opened as inode `ino`: the application may have closed
    // the number behind our back (closefrom, raw syscalls) and reused it for a socket of its own.
    static bool owns(int fd, unsigned long ino) noexcept;
    int sock_ = -1;
    int dgram_ = -1;  // announcements from clients that know this listener already
    unsigned long sock_ino_ = 0, dgram_ino_ = 0;
    ListenerTable* table_ = nullptr;
};

// The connecting side's half: a segment announced to the listener of `dst`, or nothing (no sdx
// listener there, not a local address, or an error).
// Why announce() gave nothing.
enum class Refusal { NoListener, OtherUser, SetupFailed };
struct Announced {
    shm::Segment seg;
    std::string listener;  // the listener's rendezvous name: which idle segments may serve it again
    bool poolable;         // the segment keeps its fd and goes back to SegmentPool when done (it holds a reservation)
};
std::optional<Announced> announce(const sockaddr* dst, socklen_t len, std::size_t ring_capacity, Refusal* why);
// A listener announced to did not answer in time: the next connection asks its stream socket again.
void forget_listener(const std::string& listener);
// The kernel chose our address: publish it (after connect() returned 0 or EINPROGRESS).
void publish_address(shm::Segment& seg, int fd);

// Whether `addr` is on this host: loopback, the unspecified address, or an address of one of this
// network namespace's interfaces.
bool is_local(const sockaddr* addr, socklen_t len);

}  // namespace sdx::rdv
