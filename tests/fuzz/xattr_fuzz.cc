// libFuzzer target: user.mailbox.* attribute values, through Tree::setxattr
// (what FUSE's setxattr calls) on a mailbox with messages queued, between
// sends and receives. Checks: a value is accepted exactly when the settings
// parser accepts it, getxattr then shows it in canonical form, a refused
// value changes nothing, only the owner or root may set, and no setting
// change (a resize moves every queued message into a new segment) loses,
// duplicates or reorders a message.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <string>

#include <fuzzer/FuzzedDataProvider.h>

#include "core/mailbox.h"
#include "core/mount.h"
#include "core/tree.h"

namespace {

using mbx::Errc;

void fail(const char* why, const std::string& detail = {}) {
  std::fprintf(stderr, "xattr_fuzz: %s %s\n", why, detail.c_str());
  abort();
}

constexpr uid_t kOwner = 1000;
const mbx::Sender kOwnerCaller{100, kOwner, kOwner};
const mbx::Sender kOther{200, 2000, 2000};

struct World {
  std::unique_ptr<mbx::Mount> mount;
  std::unique_ptr<mbx::Tree> tree;
};

World& world() {
  static World w = [] {
    mbx::MountConfig cfg;
    cfg.state_dir = "/dev/shm/mbxfuzz-" + std::to_string(::getpid()) + "-xattr";
    cfg.max_bytes = 4u << 20;
    auto r = mbx::Mount::open(cfg);
    if (!r) fail("cannot open the mount");
    World x;
    x.mount = std::move(r).value();
    x.mount->start();
    x.tree = std::make_unique<mbx::Tree>(*x.mount, 0755, kOwner, kOwner);
    return x;
  }();
  return w;
}

const char* const kNames[] = {"capacity", "max_message", "framing", "timeout_ms",      "messages",
                              "sent",     "lost",        "segment", "blocked_senders", "bogus"};

// What getxattr must show for a value the parser accepted.
std::string canonical(const mbx::Settings& s, std::string_view key) {
  if (key == "capacity") return mbx::format_capacity(s.capacity);
  if (key == "max_message") return std::to_string(s.max_message);
  if (key == "framing") return mbx::framing_name(s.framing);
  return std::to_string(s.timeout_ms);
}

std::string get(mbx::Tree& t, uint64_t ino, const char* key) {
  auto v = t.getxattr(ino, std::string("user.mailbox.") + key, kOwnerCaller);
  if (!v) fail("getxattr failed", key);
  return *v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  mbx::Tree& t = *world().tree;
  auto st = t.create(mbx::kRootIno, "box", 0644, kOwnerCaller);
  if (!st) fail("create");
  const uint64_t ino = st->st_ino;
  auto box = t.mailbox(ino);
  mbx::Settings model = box->settings();
  std::deque<std::string> queued;
  uint32_t next = 0, expect = 0;
  const mbx::Sender from{1, kOwner, kOwner};

  for (int step = 0; step < 40 && in.remaining_bytes() > 0; step++) {
    switch (in.ConsumeIntegralInRange<int>(0, 3)) {
      case 0:
      case 1: {  // setxattr
        std::string key = in.ConsumeBool() ? kNames[in.ConsumeIntegralInRange<size_t>(0, 9)]
                                           : in.ConsumeRandomLengthString(24);
        const std::string value = in.ConsumeRandomLengthString(32);
        const bool owner = in.ConsumeIntegralInRange<int>(0, 7) != 0;
        const Errc e = t.setxattr(ino, "user.mailbox." + key, value, owner ? kOwnerCaller : kOther);
        mbx::Settings parsed = model;
        const Errc want = mbx::apply_setting(parsed, key, value);
        if (!owner) {
          if (e != Errc::perm) fail("a non-owner changed a setting", key);
          break;
        }
        if (e == Errc::ok) {
          if (want != Errc::ok) fail("accepted a value the parser refuses", key + "=" + value);
          model = parsed;
          if (get(t, ino, key.c_str()) != canonical(model, key)) fail("getxattr differs", key);
        } else if (want == Errc::ok && (e == Errc::invalid || e == Errc::not_supported || e == Errc::perm)) {
          // (EBUSY: queued messages would not fit; ENOSPC/ENOMEM: no room for the new segment)
          fail("refused a value the parser accepts", key + "=" + value);
        }
        if (e == Errc::busy && queued.empty()) fail("EBUSY on an empty mailbox", key + "=" + value);
        break;
      }
      case 2: {  // send one message through an open file of the current framing
        auto h = t.open(ino, false, true, true, kOwnerCaller);
        if (!h) fail("open for writing");
        char m[32];
        const int n = std::snprintf(m, sizeof m, "m%u\n", next);
        auto o = box->write(**h, m, static_cast<size_t>(n), true, from, nullptr);
        bool sent = o && o->err == Errc::ok;
        if (sent && (*h)->framing == mbx::Framing::file) {
          auto f = box->flush(**h, from, nullptr);
          sent = f && f->err == Errc::ok;
        }
        box->release(**h);
        if (sent && static_cast<uint64_t>(n) > model.max_message) fail("sent a message above max_message");
        if (sent) queued.emplace_back(m, static_cast<size_t>(n)), next++;
        break;
      }
      case 3: {  // receive whatever one read gives
        auto h = t.open(ino, true, false, true, kOwnerCaller);
        if (!h) fail("open for reading");
        auto o = box->read(**h, 4096, true, nullptr);
        box->release(**h);
        if (!o || o->err != Errc::ok) {
          if (!queued.empty()) fail("a queued message did not come out");
          break;
        }
        std::string_view d = o->data;
        while (!d.empty()) {
          if (queued.empty() || d.substr(0, queued.front().size()) != queued.front())
            fail("lost, duplicated or reordered", std::string(d));
          d.remove_prefix(queued.front().size());
          queued.pop_front();
          expect++;
        }
        break;
      }
    }
    if (box->settings().capacity != model.capacity || box->settings().max_message != model.max_message ||
        box->settings().framing != model.framing || box->settings().timeout_ms != model.timeout_ms)
      fail("settings differ from the model");
    if (get(t, ino, "messages") != std::to_string(queued.size())) fail("messages differs from the model");
  }
  if (get(t, ino, "sent") != std::to_string(next) || get(t, ino, "received") != std::to_string(expect))
    fail("sent/received differ from the model");
  if (t.unlink(mbx::kRootIno, "box") != Errc::ok) fail("unlink");
  t.forget(ino, 1);
  return 0;
}
