// SPDX-License-Identifier: MIT
#include "core/shm_store.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>

#include "base/log.h"

namespace mbx {

namespace {
using Guard = MutexLock;

// At restore (before the mount serves anything), a segment whose lock a
// library peer holds is tried for a while rather than waited for.
Result<Segment> attach_trying(const std::string& path) {
  auto delay = std::chrono::milliseconds(1);
  for (auto end = std::chrono::steady_clock::now() + std::chrono::seconds(2);;) {
    auto seg = Segment::attach(path, /*no_wait=*/true);
    if (seg.error() != Errc::contended || std::chrono::steady_clock::now() >= end) return seg;
    std::this_thread::sleep_for(delay);
    delay = std::min(delay * 2, std::chrono::milliseconds(100));
  }
}
}  // namespace

// ---- the backend -------------------------------------------------------------

Result<std::unique_ptr<ShmBackend>> ShmBackend::open(const std::string& dir, uint64_t max_bytes) {
  auto sd = StateDir::open(dir, max_bytes);
  if (!sd) return sd.error();
  std::unique_ptr<ShmBackend> b(new ShmBackend());
  b->max_bytes_ = max_bytes;
  b->state_ = std::move(sd.value());
  return b;
}

void ShmBackend::start(Timers& timers) {
  timers_ = &timers;
  Guard g(state_mu_);  // restore_state_dir() may replace the control
  doorbell_ = std::make_unique<Doorbell>(state_.control(), [this] { ring(); });
}

ShmBackend::~ShmBackend() {
  doorbell_.reset();
  old_doorbells_.clear();
}

layout::ControlHeader* ShmBackend::control() const {
  Guard g(state_mu_);
  return state_.control();
}

uint64_t ShmBackend::quota_used() const { return control()->quota_used.load(std::memory_order_acquire); }

bool ShmBackend::restore_state_dir() {
  Guard g(state_mu_);
  if (!state_.missing()) return true;  // another thread rebuilt it already
  const Errc e = state_.rebuild(max_bytes_);
  if (e != Errc::ok) {
    if (std::exchange(restore_failed_said_, true)) return false;
    log(LogLevel::error, "state directory %s was removed and cannot be made again (%s): new mailboxes fail with EIO",
        state_.dir().c_str(), std::strerror(to_errno(e)));
    return false;
  }
  log(LogLevel::warning,
      "state directory %s was removed (a /dev/shm cleaner?): made it again; mailboxes made before work "
      "through the file system, and libmailbox maps them again after a resize",
      state_.dir().c_str());
  restore_failed_said_ = false;
  rebuilds_.fetch_add(1, std::memory_order_release);  // pairs with the acquire in state_rebuilds()
  if (doorbell_) {                                    // programs that mapped the old control still ring it
    old_doorbells_.push_back(std::move(doorbell_));
    doorbell_ = std::make_unique<Doorbell>(state_.control(), [this] { ring(); });
  }
  return true;
}

Result<Segment> ShmBackend::make_segment(uint64_t id, uint64_t generation, const Settings& s) {
  const uint64_t size = data_size_for(s.capacity, s.max_message, max_bytes_);
  const std::string path = state_.segment_path(id, generation);
  auto seg = Segment::create(path, s.capacity, s.max_message, size, 0600);
  if (!seg && seg.error() == Errc::not_found && state_.missing() && restore_state_dir())
    seg = Segment::create(path, s.capacity, s.max_message, size, 0600);
  if (!seg) return seg.error() == Errc::not_found ? Errc::io : seg.error();  // not the caller's ENOENT
  seg->set_control(control());
  seg->set_no_wait(true);
  return seg;
}

Result<std::unique_ptr<Store>> ShmBackend::create(uint64_t id, const Settings& s) {
  auto seg = make_segment(id, 0, s);
  if (!seg) return seg.error();
  return std::unique_ptr<Store>(std::make_unique<ShmStore>(*this, id, std::move(seg.value())));
}

Result<std::unique_ptr<Store>> ShmBackend::adopt(uint64_t id, Settings* s) {
  uint64_t newest = 0;
  bool found = false;
  for (auto [sid, gen] : state_.segments())
    if (sid == id && (!found || gen > newest)) newest = gen, found = true;
  if (!found) return Errc::not_found;
  // A crash mid-resize can leave two generations; the newer is the live one
  // (the older was retired before the newer was published).
  auto seg = attach_trying(state_.segment_path(id, newest));
  if (!seg) return seg.error();
  for (auto [sid, gen] : state_.segments())
    if (sid == id && gen != newest) ::unlink(state_.segment_path(id, gen).c_str());
  if (newest != 0) {  // back to generation 0, which this daemon's resizes count from
    const std::string to = state_.segment_path(id, 0);
    if (::rename(state_.segment_path(id, newest).c_str(), to.c_str()) != 0) return from_errno(errno);
    seg = attach_trying(to);
    if (!seg) return seg.error();
  }
  seg->set_control(state_.control());
  s->capacity = seg->capacity();
  s->max_message = seg->max_message();
  return std::unique_ptr<Store>(std::make_unique<ShmStore>(*this, id, std::move(seg.value())));
}

void ShmBackend::remove_except(const std::set<uint64_t>& keep) {
  for (auto [id, gen] : state_.segments()) {
    if (keep.count(id)) continue;
    // What it still holds goes back to the quota the dead daemon's peers kept.
    const std::string path = state_.segment_path(id, gen);
    if (auto seg = Segment::attach(path, /*no_wait=*/true)) {
      seg->set_control(state_.control());
      (void)seg->discard_all();  // a lock held: what it holds stays charged
      seg->set_state(layout::kDeleted);
      seg->wake_all();  // a peer still sleeping on it sees it deleted
    }
    ::unlink(path.c_str());
  }
}

void ShmBackend::watch(const void* key, const std::weak_ptr<StoreListener>& l, bool on) {
  Guard g(watch_mu_);
  if (on) watched_[key] = l;
  else watched_.erase(key);
}

void ShmBackend::ring() {
  std::vector<std::shared_ptr<StoreListener>> ls;
  {
    Guard g(watch_mu_);
    for (auto& [key, w] : watched_)
      if (auto l = w.lock()) ls.push_back(std::move(l));
  }
  for (auto& l : ls) l->service();
}

// Keeps a deleted segment whose lock another participant holds, and empties
// it (giving its queue's quota back) once the lock is free, tried by the
// timer thread (never waited for).
void ShmBackend::bury(Segment seg) {
  if (!timers_) return;  // not serving (or shutting down): nothing to give the quota back to
  Guard g(graves_mu_);
  graves_.push_back(std::move(seg));
  if (grave_delay_.count() != 0) return;  // a sweep is scheduled
  grave_delay_ = std::chrono::milliseconds(10);
  timers_->add(Timers::Clock::now() + grave_delay_, [this] { sweep_graves(); });
}

void ShmBackend::sweep_graves() {
  Guard g(graves_mu_);
  std::erase_if(graves_, [](Segment& s) { return s.discard_all(/*deleted_too=*/true) != Errc::contended; });
  if (graves_.empty()) {
    grave_delay_ = std::chrono::milliseconds(0);
    return;
  }
  grave_delay_ = std::min(grave_delay_ * 2, std::chrono::milliseconds(1000));
  timers_->add(Timers::Clock::now() + grave_delay_, [this] { sweep_graves(); });
}

// ---- one mailbox's segment -------------------------------------------------------

ShmStore::ShmStore(ShmBackend& backend, uint64_t id, Segment seg) : backend_(backend), id_(id), seg_(std::move(seg)) {
  seg_.set_no_wait(true);
}

ShmStore::~ShmStore() {
  if (seg_.valid()) destroy(!seg_.corrupt());
}

Result<uint64_t> ShmStore::push(std::string_view msg, const Sender& from, bool force, unsigned prio) {
  return seg_.push(msg.data(), msg.size(), from, realtime_ns(), force, prio);
}

Result<Store::Popped> ShmStore::pop(std::string& out) {
  auto p = seg_.pop(out, realtime_ns());
  if (!p) return p.error();
  return Popped{p->seq, p->from, p->prio, {}};
}

Store::Withdrawn ShmStore::try_withdraw(uint64_t seq) {
  switch (seg_.try_withdraw(seq)) {
    case Segment::Withdrawn::taken_back: return Withdrawn::taken_back;
    case Segment::Withdrawn::received: return Withdrawn::received;
    case Segment::Withdrawn::contended: break;
  }
  return Withdrawn::contended;
}

uint64_t ShmStore::removed_count() {
  // SYNC POINT: acquire, pairs with the receivers' release store of
  // popped_pub: records below it are gone.
  return seg_.header()->popped_pub.load(std::memory_order_acquire);
}

QueueStats ShmStore::stats() {
  const SegmentStats s = seg_.stats();
  return QueueStats{s.count, s.bytes,    s.record_bytes, s.total_sent,   s.total_received,
                    s.lost,  s.next_seq, s.consumed_seq, s.last_send_ns, s.last_recv_ns};
}

void ShmStore::watch(uint32_t bits, const std::weak_ptr<StoreListener>& listener) {
  static_assert(uint32_t{kWatchReadable} == layout::kWatchReadable &&
                uint32_t{kWatchWritable} == layout::kWatchWritable &&
                uint32_t{kWatchParkedReceivers} == layout::kWatchParkedReceivers &&
                uint32_t{kWatchPolled} == layout::kWatchPolled);
  // SYNC POINT: seq_cst store, then the caller's re-check; pairs with the
  // fence and load in Segment::kick_daemon (a Dekker pair: either the
  // re-check sees the other participant's change, or it sees the bit and kicks).
  seg_.header()->daemon_watch.store(bits, std::memory_order_seq_cst);
  watch_ = bits;
  backend_.watch(this, listener, bits != 0);
}

bool ShmStore::take_kick() {
  // SYNC POINT: acq_rel, pairs with the release store of `kick` in Segment::kick_daemon.
  return seg_.header()->kick.exchange(0, std::memory_order_acq_rel) != 0;
}

void ShmStore::after_change(bool pushed, bool popped) {
  if (pushed) seg_.after_push(true);
  if (popped) seg_.after_pop(true);
}

uint32_t ShmStore::sleeping_receivers() {
  // SYNC POINT: seq_cst load; pairs with the seq_cst increment in
  // libmailbox's wait_change() (then Segment::receiver_sleeping's fence and kick).
  return seg_.header()->sleeping_receivers.load(std::memory_order_seq_cst);
}

Errc ShmStore::reshape(const Settings& n, uint64_t* first) {
  // Retiring first stops other participants (they look the mailbox up
  // again, and wait for the daemon's answer) before the queue is taken.
  std::vector<Segment::Taken> queued;
  auto taken = seg_.retire_and_take(queued);
  if (!taken) return taken.error();  // contended: the caller tries again
  const SegmentStats st = *taken;
  Settings geo = n;
  if (geo.capacity != layout::kUnbounded) geo.capacity = std::max<uint64_t>(geo.capacity, queued.size());
  auto fresh = backend_.make_segment(id_, generation_ + 1, geo);
  bool fits = fresh.ok();
  for (const auto& t : queued) {
    if (!fits) break;
    fits = fresh->push(t.data.data(), t.data.size(), t.from, st.last_send_ns, /*force=*/true, t.prio).ok();
  }
  if (!fresh || !fits) {  // put everything back where it was
    seg_.unretire_and_put_back(queued, st);
    if (fresh) fresh->unlink_file();
    return fresh ? Errc::busy : fresh.error();
  }
  fresh->set_capacity(n.capacity);
  fresh->adopt_counters(st);
  // SYNC POINT: seq_cst, as in watch(): the new segment's participants kick
  // the daemon as the old one's did.
  fresh->header()->daemon_watch.store(watch_, std::memory_order_seq_cst);
  *first = seg_.header()->send.next_seq - queued.size();
  seg_.unlink_file();
  seg_.wake_all();  // sleepers on the old segment re-check and see it retired
  seg_ = std::move(fresh.value());
  generation_++;
  idle_tail_ = idle_head_ = UINT64_MAX;  // a new ring: its positions start again
  trimmed_ = false;
  return Errc::ok;
}

void ShmStore::destroy(bool trust_counters) {
  if (!seg_.valid()) return;
  if (watch_) backend_.watch(this, {}, false);
  watch_ = 0;
  // A lock held elsewhere: the backend empties it (gives its quota back)
  // once it is free. A corrupt one's counters are not trusted.
  const bool held = trust_counters && seg_.discard_all() == Errc::contended;
  seg_.set_state(layout::kDeleted);
  seg_.wake_all();  // sleeping participants re-check and see it deleted
  seg_.unlink_file();
  if (held) backend_.bury(std::move(seg_));
  seg_ = Segment();  // frees the shared memory now, not at the last close
}

void ShmStore::sweep(bool may_trim) {
  if (!seg_.valid()) return;
  const layout::SegmentHeader* h = seg_.header();
  // Relaxed: only a sign of activity (both positions only grow, and every
  // send or receive moves one); trim() re-checks emptiness under both locks.
  const uint64_t tail = h->tail_pub.load(std::memory_order_relaxed);
  const uint64_t head = h->head_pub.load(std::memory_order_relaxed);
  const bool still = tail == idle_tail_ && head == idle_head_;
  idle_tail_ = tail;
  idle_head_ = head;
  // Relaxed: hints. A library participant asleep on a ring that did not move
  // since the last sweep may have lost its wake-up (its waker was killed
  // between publishing and waking, or the one sleeper woken died before
  // acting); libmailbox's waits have no periodic re-check, so wake them all
  // to look again. A spurious wake costs a sleeper one look at the ring.
  if (still && (h->sleeping_senders.load(std::memory_order_relaxed) != 0 ||
                (tail != head && h->sleeping_receivers.load(std::memory_order_relaxed) != 0)))
    seg_.wake_all();
  if (!still) trimmed_ = false;
  if (!may_trim || !still || trimmed_ || tail != head) return;
  // Relaxed: a hint only; a library participant asleep on the ring (a
  // rendezvous receiver waiting for a sender) means the mailbox is in use.
  if (h->sleeping_receivers.load(std::memory_order_relaxed) != 0 ||
      h->sleeping_senders.load(std::memory_order_relaxed) != 0)
    return;
  // Contended (a participant holds a lock: not idle after all), busy (queued)
  // or corrupt: left as it is, looked at again at the next sweep.
  if (seg_.trim() != Errc::ok) return;
  trimmed_ = true;
  idle_tail_ = h->tail_pub.load(std::memory_order_relaxed);  // trim() moved both to the next lap
  idle_head_ = h->head_pub.load(std::memory_order_relaxed);
}

Result<std::string> ShmStore::locator() const {
  // Removed with the state directory (it lives on as the daemon's mapping):
  // nothing to map. A resize makes a new one.
  if (!seg_.valid() || (::access(seg_.path().c_str(), F_OK) != 0 && errno == ENOENT)) return Errc::io;
  return seg_.path();
}

}  // namespace mbx
