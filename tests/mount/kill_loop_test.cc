// Random SIGKILLs of the peers of one mailbox: library senders and receivers
// and file senders and receivers (write(2)/read(2) on the mount), each
// killed at a random moment and started again, while every message carries
// a checksum of its contents. Afterwards: the mailbox is not corrupt, no
// message was damaged or delivered twice, and every missing message is one
// a killed peer had in its hands:
//  - a sender killed during its send: the message was never sent (killed
//    before it took the send lock) or was counted in user.mailbox.lost
//    (killed holding it); at most one per killed sender;
//  - a receiver killed after its receive committed and before it recorded
//    the message (here: marked it received); at most one per killed receiver.
// MBX_KILLS sets the number of kills (default 500, about 10 s; more for longer
// runs, with MBX_TEST_HANG_MS raised past the suite's 300 s hang guard).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <mailbox/mailbox.hpp>

#include "harness.h"

namespace {

using mailbox::Mailbox;

constexpr uint64_t kMaxIds = 1u << 22;
constexpr size_t kMaxMsg = 4096;

// Shared by the test and every peer (anonymous shared memory, made before the forks).
struct Board {
  std::atomic<uint64_t> next_id;
  std::atomic<uint64_t> damaged;
  std::atomic<uint64_t> chunk_bytes;        // record bytes received (how far the head went)
  std::atomic<uint8_t> attempted[kMaxIds];  // a sender took the id and is about to send it
  std::atomic<uint8_t> sent[kMaxIds];       // its send returned success
  std::atomic<uint8_t> received[kMaxIds];   // times a receiver took it, checksum intact
};

uint64_t fnv(const char* p, size_t n, uint64_t h) {
  for (size_t i = 0; i < n; i++) h = (h ^ static_cast<unsigned char>(p[i])) * 1099511628211ull;
  return h;
}

// Message `id`: {id, checksum} then 0..4080 bytes that depend on id.
std::string make(uint64_t id) {
  const size_t body = (id * 7919) % (kMaxMsg - 16);
  std::string m(16 + body, '\0');
  for (size_t k = 0; k < body; k++) m[16 + k] = static_cast<char>('a' + (id + k * 13) % 26);
  const uint64_t sum = fnv(m.data() + 16, body, id * 1000003ull + 1469598103934665603ull);
  std::memcpy(&m[0], &id, 8);
  std::memcpy(&m[8], &sum, 8);
  return m;
}

void record(Board* b, const char* p, size_t n) {
  uint64_t id;
  if (n < 16 || (std::memcpy(&id, p, 8), id >= kMaxIds) || make(id) != std::string_view(p, n)) {
    b->damaged.fetch_add(1);
    return;
  }
  b->received[id].fetch_add(1);
  b->chunk_bytes.fetch_add(32 + ((n + 7) & ~size_t{7}));
}

enum Role { kLibSend, kLibRecv, kFileSend, kFileRecv, kRoles };
const char* const kRoleName[] = {"library sender", "library receiver", "file sender", "file receiver"};

[[noreturn]] void peer(Role role, const std::string& path, Board* b) {
  if (role == kLibSend || role == kFileSend) {
    std::optional<Mailbox> box;
    int fd = -1;
    if (role == kLibSend) {
      auto r = Mailbox::open(path, {.send = true, .receive = false});
      if (!r) ::_exit(10);
      box.emplace(std::move(*r));
    } else if ((fd = ::open(path.c_str(), O_WRONLY)) < 0) {
      ::_exit(11);
    }
    for (;;) {
      const uint64_t id = b->next_id.fetch_add(1);
      if (id >= kMaxIds) ::_exit(0);
      const std::string m = make(id);
      b->attempted[id].store(1);
      const bool ok = box ? box->send(m) == 0 : ::write(fd, m.data(), m.size()) == static_cast<ssize_t>(m.size());
      if (!ok) ::_exit(12);
      b->sent[id].store(1);
    }
  }
  std::vector<char> buf(kMaxMsg);
  if (role == kLibRecv) {
    auto r = Mailbox::open(path, {.send = false, .receive = true});
    if (!r) ::_exit(13);
    for (;;) {
      auto n = r->receive(buf.data(), buf.size());
      if (!n) ::_exit(14);
      record(b, buf.data(), *n);
    }
  }
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) ::_exit(15);
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) ::_exit(16);
    if (n > 0) record(b, buf.data(), static_cast<size_t>(n));
  }
}

// SIGKILLs a peer and reaps it: its status, or -1 if it is still there after
// a generous deadline (a file peer waits for the daemon to answer its call).
int kill_and_reap(pid_t pid) {
  ::kill(pid, SIGKILL);
  for (long long end = mt::now_ms() + 20000; mt::now_ms() < end;) {
    int st;
    if (::waitpid(pid, &st, WNOHANG) == pid) return st;
    ::usleep(1000);
  }
  return -1;
}

TEST(KillLoop, RandomKillsOfLibraryAndFilePeersLoseOnlyWhatTheyHeld) {
  const char* env = std::getenv("MBX_KILLS");
  const int kills_wanted = env ? std::atoi(env) : 500;
  mt::Mount m("framing=datagram");
  ASSERT_TRUE(m.ok());
  // Room for a backlog of thousands of messages in a data area of many
  // 256 KiB chunks, so that receives keep passing chunk ends.
  ASSERT_EQ(m.sh("touch box && setfattr -n user.mailbox.max_message -v 4096 box && "
                 "setfattr -n user.mailbox.capacity -v 4000 box")
                .status,
            0);
  const std::string path = m.path("box");
  void* mem = ::mmap(nullptr, sizeof(Board), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  Board* b = new (mem) Board{};

  // Two of each library role, one of each file role.
  const std::vector<Role> roles = {kLibSend, kLibSend, kLibRecv, kLibRecv, kFileSend, kFileRecv};
  std::vector<pid_t> pids(roles.size());
  auto start = [&](size_t i) {
    pids[i] = ::fork();
    if (pids[i] == 0) peer(roles[i], path, b);
  };
  for (size_t i = 0; i < roles.size(); i++) start(i);
  struct Reaper {  // whatever happens, no peer outlives the test (0: reaped)
    std::vector<pid_t>& pids;
    ~Reaper() {
      for (pid_t p : pids)
        if (p > 0) ::kill(p, SIGKILL);
    }
  } reaper{pids};

  std::mt19937 rng(12345);
  int kills[kRoles] = {}, early_exits = 0;
  std::string exits;
  bool stuck = false;
  auto kill_peer = [&](size_t i) {
    const int st = kill_and_reap(pids[i]);
    if (st >= 0) pids[i] = 0;
    if (st < 0) {
      stuck = true;
      ADD_FAILURE() << "a killed " << kRoleName[roles[i]] << " never ended (the daemon does not answer?)";
    } else if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) {
      kills[roles[i]]++;
    } else {
      early_exits++;
      exits += std::string(kRoleName[roles[i]]) + " exited " + std::to_string(WEXITSTATUS(st)) + "; ";
    }
  };
  for (int k = 0; k < kills_wanted && !stuck && b->next_id.load() < kMaxIds - 100000; k++) {
    // A random moment: a random number of messages from now (or a peer ended).
    const uint64_t until = b->next_id.load() + rng() % 400;
    const long long give_up = mt::now_ms() + 20000;
    while (b->next_id.load() < until && mt::now_ms() < give_up) ::usleep(100);
    if (b->next_id.load() < until) {
      stuck = true;
      ADD_FAILURE() << "no message sent for 20 s (the daemon does not answer, or every sender waits)";
      break;
    }
    const size_t i = rng() % roles.size();
    kill_peer(i);
    start(i);
  }

  // The senders are killed too (a sender asked to stop could be waiting on a
  // lock whose wake-up a killed peer took: glibc's robust mutexes wake one
  // waiter, and a waiter killed after its wake-up passes it on to nobody).
  // Then the receivers drain the mailbox and are stopped (waiting on an
  // empty mailbox, they hold nothing).
  for (size_t i = 0; i < roles.size() && !stuck; i++)
    if (roles[i] == kLibSend || roles[i] == kFileSend) kill_peer(i);
  if (!stuck) {
    EXPECT_TRUE(mt::wait_until([&] { return m.xattr("box", "messages") == "0"; }, 30000))
        << m.xattr("box", "messages") << " still queued";
  }
  for (size_t i = 0; i < roles.size(); i++)
    if ((roles[i] == kLibRecv || roles[i] == kFileRecv) && !stuck) {
      stuck = kill_and_reap(pids[i]) < 0;
      if (!stuck) pids[i] = 0;
    }
  ASSERT_FALSE(stuck) << m.daemon_stderr();

  const uint64_t ids = std::min<uint64_t>(b->next_id.load(), kMaxIds);
  uint64_t checked = 0, dup = 0, lost_held_by_receiver = 0, unsent = 0;
  for (uint64_t id = 0; id < ids; id++) {
    const uint8_t got = b->received[id].load();
    checked += got;
    dup += got > 1;
    if (got || !b->attempted[id].load()) continue;
    (b->sent[id].load() ? lost_held_by_receiver : unsent)++;
  }
  const uint64_t counted_lost = std::strtoull(m.xattr("box", "lost").c_str(), nullptr, 10);
  const bool corrupt = m.sh("echo ok > box && dd if=box bs=64k count=1 status=none").out != "ok\n";
  const int recv_kills = kills[kLibRecv] + kills[kFileRecv], send_kills = kills[kLibSend] + kills[kFileSend];
  std::printf(
      "kills injected: %d (library senders %d, library receivers %d, file senders %d, file receivers %d)\n"
      "messages checked: %llu (%.1f MiB of records, %.0f chunk lengths)\n"
      "lost: %llu held by killed receivers, %llu by killed senders (user.mailbox.lost %llu)\n"
      "damaged: %llu, duplicated: %llu, corrupt mailboxes: %d\n",
      send_kills + recv_kills, kills[kLibSend], kills[kLibRecv], kills[kFileSend], kills[kFileRecv],
      static_cast<unsigned long long>(checked), b->chunk_bytes.load() / 1048576.0, b->chunk_bytes.load() / 262144.0,
      static_cast<unsigned long long>(lost_held_by_receiver), static_cast<unsigned long long>(unsent),
      static_cast<unsigned long long>(counted_lost), static_cast<unsigned long long>(b->damaged.load()),
      static_cast<unsigned long long>(dup), corrupt);
  EXPECT_FALSE(corrupt);
  EXPECT_EQ(b->damaged.load(), 0u);
  EXPECT_EQ(dup, 0u);
  EXPECT_EQ(early_exits, 0) << exits;
  EXPECT_LE(lost_held_by_receiver, static_cast<uint64_t>(recv_kills));
  EXPECT_LE(unsent, static_cast<uint64_t>(send_kills));
  EXPECT_LE(counted_lost, unsent);                 // the lost counter counts only real deaths in a send
  EXPECT_GE(b->chunk_bytes.load(), 40 * 262144u);  // the head passed many chunk ends
  EXPECT_EQ(m.daemon_stderr().find("corrupt"), std::string::npos) << m.daemon_stderr();
  b->~Board();
  ::munmap(mem, sizeof(Board));
}

}  // namespace
