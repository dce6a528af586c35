// libFuzzer target: the framing state machine of Mailbox (file, datagram and
// line framing), driven through its core API with random write and read
// sizes, opens, closes and flushes from several open files, and checked
// against a model: nothing lost, nothing duplicated, order kept, message
// boundaries right. Only what the API itself says is dropped may be missing:
// the unread rest of a message whose reader closed, and an unsent partial
// message whose close failed.
//
// Line framing: a read may return one line or several whole lines (the
// model accepts both), never a line cut short except when it is longer than
// the read.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <fuzzer/FuzzedDataProvider.h>

#include "core/mailbox.h"
#include "core/mount.h"

namespace {

using mbx::Errc;
using mbx::Framing;

void fail(const char* why) {
  std::fprintf(stderr, "framing_fuzz: model mismatch: %s\n", why);
  abort();
}

mbx::Mount& mount() {
  static std::unique_ptr<mbx::Mount> m = [] {
    mbx::MountConfig cfg;
    cfg.state_dir = "/dev/shm/mbxfuzz-" + std::to_string(::getpid()) + "-framing";
    cfg.max_bytes = 1u << 20;
    auto r = mbx::Mount::open(cfg);
    if (!r) fail("cannot open the mount");
    auto p = std::move(r).value();
    p->start();
    return p;
  }();
  return *m;
}

struct Writer {
  std::unique_ptr<mbx::Handle> h;
  std::string partial;   // model of h->wbuf: accepted bytes not yet a message
  bool refused = false;  // file framing: the message was refused (EMSGSIZE)
};
struct Reader {
  std::unique_ptr<mbx::Handle> h;
  std::string rest;  // model of the unread rest of a message this open file took
  bool got = false;  // file framing: this open has had its message
};

struct Model {
  Framing framing;
  uint64_t max_message;
  std::deque<std::string> queue;  // messages in the ring, oldest first
  uint64_t sent = 0, received = 0;

  void push(std::string m) {
    queue.push_back(std::move(m));
    sent++;
  }
  // Checks what one successful read returned and advances the model.
  void read(Reader& r, std::string_view d, size_t want) {
    if (d.size() > want) fail("a read returned more than asked");
    if (framing == Framing::file && r.got && r.rest.empty()) {
      if (!d.empty()) fail("file framing: a second message on one open");
      return;
    }
    bool first = true;  // only the first message of a read may be cut (it is longer than the read)
    if (!r.rest.empty()) {
      first = false;
      const size_t k = std::min(d.size(), r.rest.size());
      if (d.substr(0, k) != std::string_view(r.rest).substr(0, k)) fail("the rest of a message changed");
      r.rest.erase(0, k);
      d.remove_prefix(k);
      if (d.empty()) return;
      if (!r.rest.empty() || framing != Framing::line) fail("a read crossed a message boundary");
    }
    do {
      if (queue.empty()) fail("a read returned a message nobody sent");
      const std::string& m = queue.front();
      if (d.size() >= m.size() && d.substr(0, m.size()) == m) {
        d.remove_prefix(m.size());
      } else {
        if (!first) fail("line framing: a line cut after another one");
        if (d.size() >= m.size() || std::string_view(m).substr(0, d.size()) != d)
          fail("a read returned bytes that are not the oldest message");
        r.rest = m.substr(d.size());
        d = {};
      }
      queue.pop_front();
      received++;
      if (framing == Framing::file) r.got = true;
      first = false;
    } while (!d.empty() && framing == Framing::line);
    if (!d.empty()) fail("a read returned more than one message");
  }
};

// The next `n` bytes of a writer's stream: printable, with newlines where the
// input says (line framing's boundaries).
std::string bytes(FuzzedDataProvider& in, size_t n, uint32_t& counter) {
  std::string s(n, '\0');
  const uint8_t nl = in.ConsumeIntegral<uint8_t>();
  for (size_t k = 0; k < n; k++) {
    counter++;
    s[k] = static_cast<char>('a' + counter % 26);
    if (nl && (counter * 2654435761u) % 256 < nl / 4u) s[k] = '\n';
  }
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  static uint64_t next_id = 1;
  static const uint64_t kCaps[] = {0, 1, 2, 5, 64, mbx::layout::kUnbounded};
  mbx::Settings s;
  s.framing = static_cast<Framing>(in.ConsumeIntegralInRange<int>(0, 2));
  s.capacity = kCaps[in.ConsumeIntegralInRange<size_t>(0, 5)];
  s.max_message = in.ConsumeIntegralInRange<uint64_t>(1, 200);
  auto made = mount().create_mailbox(next_id++, s);
  if (!made) fail("create_mailbox");
  std::shared_ptr<mbx::Mailbox> box = made.value();
  Model model{s.framing, s.max_message, {}};
  std::vector<Writer> writers;
  std::vector<Reader> readers;
  const mbx::Sender from{1, 2, 3};
  uint32_t counter = 0;

  // Close = flush (as FUSE's flush on close(2)), then release.
  auto close_writer = [&](size_t i) {
    Writer& w = writers[i];
    auto o = box->flush(*w.h, from, nullptr);
    if (!o) fail("a non-blocking flush would block");
    if (o->err == Errc::ok && !w.partial.empty() && !w.refused) model.push(w.partial);
    if (o->err == Errc::ok && w.refused) fail("flush of a refused message succeeded");
    if (o->err == Errc::msg_size && !w.refused) fail("flush: EMSGSIZE for a message never refused");
    box->release(*w.h);
    writers.erase(writers.begin() + static_cast<long>(i));
  };

  for (int step = 0; step < 200 && in.remaining_bytes() > 0; step++) {
    switch (in.ConsumeIntegralInRange<int>(0, 5)) {
      case 0:  // open a writer (non-blocking: the fuzzer has one thread)
        if (writers.size() < 3) writers.push_back({box->open(false, true, true)});
        break;
      case 1:  // open a reader
        if (readers.size() < 3) readers.push_back({box->open(true, false, true)});
        break;
      case 2: {  // write
        if (writers.empty()) break;
        Writer& w = writers[in.ConsumeIntegralInRange<size_t>(0, writers.size() - 1)];
        const std::string d = bytes(in, in.ConsumeIntegralInRange<size_t>(0, s.max_message + 20), counter);
        auto o = box->write(*w.h, d.data(), d.size(), true, from, nullptr);
        if (!o) fail("a non-blocking write would block");
        if (o->err != Errc::ok) {
          if (s.framing == Framing::file && o->err == Errc::msg_size) w.refused = true, w.partial.clear();
          if (s.framing == Framing::line && o->err == Errc::msg_size) {
            // A line too long is refused with the partial line before it if that is the one.
            std::string all = w.partial + d;
            const size_t nl = all.find('\n');
            if ((nl == std::string::npos ? all.size() : nl + 1) > s.max_message) w.partial.clear();
          }
          break;
        }
        if (o->written > d.size()) fail("wrote more than given");
        if (s.framing == Framing::datagram) {
          if (o->written != d.size()) fail("a short datagram write");
          model.push(d);
        } else if (s.framing == Framing::file) {
          if (o->written != d.size()) fail("a short file-framing write");
          w.partial += d;
        } else {
          std::string all = w.partial + d.substr(0, o->written);
          size_t start = 0;
          for (size_t k = 0; k < all.size(); k++)
            if (all[k] == '\n') model.push(all.substr(start, k + 1 - start)), start = k + 1;
          w.partial = all.substr(start);
          if (o->written < d.size() && !w.partial.empty()) fail("a short line write ended inside a line");
        }
        break;
      }
      case 3: {  // read
        if (readers.empty()) break;
        Reader& r = readers[in.ConsumeIntegralInRange<size_t>(0, readers.size() - 1)];
        const size_t want = in.ConsumeIntegralInRange<size_t>(1, s.max_message + 20);
        auto o = box->read(*r.h, want, true, nullptr);
        if (!o) fail("a non-blocking read would block");
        if (o->err == Errc::again) {
          if (!r.rest.empty()) fail("EAGAIN with the rest of a message unread");
          if (!model.queue.empty() && !(s.framing == Framing::file && r.got)) fail("EAGAIN with messages queued");
          break;
        }
        if (o->err != Errc::ok) fail("a read failed");
        model.read(r, o->data, want);
        break;
      }
      case 4:  // close a writer
        if (!writers.empty()) close_writer(in.ConsumeIntegralInRange<size_t>(0, writers.size() - 1));
        break;
      case 5: {  // close a reader: the rest of its message goes with it
        if (readers.empty()) break;
        const size_t i = in.ConsumeIntegralInRange<size_t>(0, readers.size() - 1);
        box->release(*readers[i].h);
        readers.erase(readers.begin() + static_cast<long>(i));
        break;
      }
    }
    auto info = box->info();
    if (info.seg.count != model.queue.size()) fail("messages counter differs from the model");
    if (info.seg.total_sent != model.sent || info.seg.total_received != model.received)
      fail("sent/received counters differ from the model");
  }
  while (!writers.empty()) close_writer(writers.size() - 1);
  // Drain: every queued message comes out, in order.
  std::unique_ptr<mbx::Handle> last;
  while (!model.queue.empty()) {
    Reader r{box->open(true, false, true)};
    auto o = box->read(*r.h, s.max_message + 20, true, nullptr);
    if (!o || o->err != Errc::ok) fail("drain: a queued message did not come out");
    model.read(r, o->data, s.max_message + 20);
    if (!r.rest.empty()) fail("drain: a message longer than max_message");
    box->release(*r.h);
  }
  if (box->info().seg.count != 0) fail("drained, yet messages are counted");
  for (auto& r : readers) box->release(*r.h);
  readers.clear();
  box->remove();
  return 0;
}
