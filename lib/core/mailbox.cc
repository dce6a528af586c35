// SPDX-License-Identifier: MIT
#include "core/mailbox.h"

#include <poll.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include "base/log.h"
#include "base/proc.h"

namespace mbx {

namespace {
using Guard = MutexLock;
}

Mailbox::Op::Op(Mailbox& m, bool settle) NO_THREAD_SAFETY_ANALYSIS : m_(m), settled_(!settle) { m_.mu_.lock(); }

void Mailbox::Op::settle() NO_THREAD_SAFETY_ANALYSIS {
  m_.settle_locked(b);
  settled_ = true;
}

Mailbox::Op::~Op() NO_THREAD_SAFETY_ANALYSIS {
  if (!settled_) m_.settle_locked(b);
  // What stat shows may have changed: attributes the kernel caches go first.
  if ((b.changed || b.attrs) && m_.attrs_cached_) {
    m_.attrs_cached_ = false;
    b.inval_attrs = true;
  }
  m_.mu_.unlock();
  m_.commit(b, interrupted);
}

Mailbox::Mailbox(Host& host, uint64_t id, Settings s, std::unique_ptr<Store> store)
    : host_(host),
      id_(id),
      settings_(s),
      store_(std::move(store)),
      counts_arrivals_(store_ && store_->looks_are_round_trips()) {}

Mailbox::~Mailbox() {
  for (const Queued& q : queued_) host_.held().dequeued(q.uid, q.bytes);
  if (!queued_.empty()) host_.held().untrack(this);
  if (store_) store_->destroy(!quarantined_);
}

std::unique_ptr<Handle> Mailbox::open(bool can_read, bool can_write, bool nonblock) {
  auto h = std::make_unique<Handle>();
  Guard g(mu_);
  h->box = shared_from_this();
  if (store_) store_->load_settings(&settings_);  // another daemon may have changed them
  h->framing = settings_.framing;
  h->prio = settings_.send_priority;
  h->can_read = can_read;
  h->can_write = can_write;
  h->nonblock = nonblock;
  if (can_write && h->framing != Framing::file) parkable_writers_++;
  open_files_++;
  return h;
}

bool Mailbox::name_cacheable() {
  Guard g(mu_);
  return settings_.framing == Framing::file && parkable_writers_ == 0;
}

void Mailbox::release(Handle& h) {
  std::unique_ptr<PollToken> old;
  bool last;
  {
    Op op(*this, /*settle=*/false);
    if (h.can_write && h.framing != Framing::file) parkable_writers_--;
    if (h.poll) {
      handles_.remove(&h);
      old = std::move(h.poll);
      op.settle();
    }
    drop_wbuf_locked(h);
    last = --open_files_ == 0 && remove_at_last_close_;
  }
  if (last) remove();
}

void Mailbox::discard_unsent(Handle& h) {
  Guard g(mu_);
  drop_wbuf_locked(h);
  h.wrefused = Errc::ok;  // the message it refused is gone with it
}

bool Mailbox::has_unsent(Handle& h) {
  Guard g(mu_);
  return !h.wbuf.empty();
}

void Mailbox::drop_wbuf_locked(Handle& h) {
  h.wbuf.clear();
  h.wbuf.shrink_to_fit();
  trim_held_locked(h);
}

// Gives back what the open file holds beyond its buffer.
void Mailbox::trim_held_locked(Handle& h) {
  if (h.held <= h.wbuf.size()) return;
  host_.held().unhold(h.held_uid, h.held - h.wbuf.size());
  h.held = h.wbuf.size();
}

void Mailbox::track_locked(uint64_t seq, uid_t uid, uint64_t bytes) {
  queued_.push_back({seq, uid, bytes});
  host_.held().queued(uid, bytes, shared_from_this());
}

void Mailbox::reconcile_locked() {
  if (queued_.empty()) return;
  // Messages below it are gone (Store::removed_count, acquire). No store: all are gone.
  const uint64_t popped = store_ ? store_->removed_count() : UINT64_MAX;
  while (!queued_.empty() && queued_.front().seq < popped) {
    host_.held().dequeued(queued_.front().uid, queued_.front().bytes);
    queued_.pop_front();
  }
  if (queued_.empty()) host_.held().untrack(this);
}

void Mailbox::settle_in_flight(const std::vector<uint64_t>& seqs, bool delivered) {
  {
    Op op(*this);
    if (!store_) return;  // removed meanwhile: the in-flight records went with it
    if (delivered) {
      for (uint64_t s : seqs) (void)store_->ack(s);  // a failure leaves it to the lease recovery
      return;
    }
    for (auto it = seqs.rbegin(); it != seqs.rend(); ++it) (void)store_->unpop(*it);  // the first ends at the front
    op.b.changed = true;                                                              // parked readers take them
    op.b.found_empty = false;
  }
}

void Mailbox::reconcile() {
  Guard g(mu_);
  reconcile_locked();
}

// ---- receiving -------------------------------------------------------------

// Takes what `h` may receive now, or nullopt if that would block. Consumes a
// message only when it is returned, so a call that parks has consumed nothing.
std::optional<Outcome> Mailbox::take_locked(Handle& h, size_t want, Batch& b) {
  Outcome out;
  if (h.roff < h.rbuf.size()) {  // the rest of a message this open file already received
    size_t n = std::min(want, h.rbuf.size() - h.roff);
    out.data.assign(h.rbuf, h.roff, n);
    h.roff += n;
    if (h.roff < h.rbuf.size()) return out;
    h.rbuf.clear();
    h.roff = 0;
    h.rest_held.store(false, std::memory_order_relaxed);  // a hint (Handle::rest_held)
    if (h.framing != Framing::line_batch || removed_) return out;  // batched line framing may add whole lines
  } else {
    if (h.framing == Framing::file && h.got_message) return out;  // EOF: one message per open
    if (removed_) return Outcome(removed_why_);
    if (quarantined_) return Outcome(Errc::bad_message);
  }
  auto keep_rest = [&](std::string& msg) {
    if (msg.size() > want) {
      out.data.assign(msg, 0, want);
      h.rbuf = std::move(msg);
      h.roff = want;
      h.rest_held.store(true, std::memory_order_relaxed);  // a hint (Handle::rest_held)
    } else {
      out.data += msg;
    }
  };
  // Line framing returns one line per read, as datagram framing returns one
  // message: a reader that reads ahead (head, sed, stdio) loses nothing.
  if (h.framing == Framing::line_batch) {
    // Whole lines, as many as fit; never fill the request exactly with more
    // than one line, or the kernel may ask again for the rest of a large read.
    for (;;) {
      auto len = store_->peek_len();
      if (!len) {
        b.contended |= len.error() == Errc::contended;
        if (len.error() != Errc::again && len.error() != Errc::contended && out.data.empty())
          return Outcome(len.error());
        break;
      }
      if (!out.data.empty() && out.data.size() + *len >= want) break;
      std::string msg;
      auto p = store_->pop(msg);
      if (!p) {
        b.contended |= p.error() == Errc::contended;
        if (out.data.empty() && p.error() != Errc::contended) return Outcome(p.error());
        break;
      }
      b.popped = b.changed = true;
      if (store_->keeps_in_flight()) out.in_flight.push_back(p->seq);
      if (!out.has_from) out.from = p->from, out.from_host = p->host, out.prio = p->prio, out.has_from = true;
      if (out.data.empty()) {
        keep_rest(msg);
        if (!h.rbuf.empty()) break;
        continue;
      }
      out.data += msg;
    }
    if (out.data.empty()) return std::nullopt;
    return out;
  }
  std::string msg;
  auto p = store_->pop(msg);
  if (!p) {
    b.contended |= p.error() == Errc::contended;
    b.found_empty |= p.error() == Errc::again && store_->looks_are_round_trips();
    if (p.error() == Errc::again || p.error() == Errc::contended) return std::nullopt;  // parks
    return Outcome(p.error());
  }
  b.popped = b.changed = true;
  if (store_->keeps_in_flight()) out.in_flight.push_back(p->seq);
  out.from = p->from;
  out.from_host = std::move(p->host);
  out.prio = p->prio;
  out.has_from = true;
  if (h.framing == Framing::file) h.got_message = true;
  keep_rest(msg);
  return out;
}

// A receive or poll through `h` would look at the ring (not at what the open
// file already holds), and the ring is empty: the feeder may bring a message.
bool Mailbox::wants_feed(Handle& h) {
  if (!feeder_) return false;
  Guard g(mu_);
  const bool own = h.roff < h.rbuf.size() || (h.framing == Framing::file && h.got_message);
  return !own && !removed_ && !quarantined_ && store_ && store_->stats().count == 0;
}

bool Mailbox::reads_arriving_locked() {
  // Relaxed: a hint (arriving_reads_).
  return !removed_ && !quarantined_ && store_->capacity() != 0 &&
         arriving_reads_.load(std::memory_order_relaxed) > 0;
}

std::optional<Outcome> Mailbox::read(Handle& h, size_t size, bool nonblock, Waiter* w, pid_t reader) {
  if (wants_feed(h)) feeder_->feed(*this);
  std::optional<Outcome> out;
  // h.framing is set at open and never changes: read without mu_. A file
  // framing reader's second read is its end of file, and a read with a
  // rest to return takes nothing from the store either.
  const bool counts =
      counts_arrivals_ && h.framing != Framing::file && !h.rest_held.load(std::memory_order_relaxed);
  // Relaxed: a hint (arriving_reads_).
  if (counts) arriving_reads_.fetch_add(1, std::memory_order_relaxed);
  {
    Op op(*this);
    if (counts) arriving_reads_.fetch_sub(1, std::memory_order_relaxed);
    Batch& b = op.b;
    h.nonblock = nonblock;
    if (w && w->interrupted_) {
      out = Outcome{Errc::interrupted};
    } else if (!h.can_read) {
      out = Outcome{Errc::bad_fd};
    } else {
      const bool own = h.roff < h.rbuf.size() || (h.framing == Framing::file && h.got_message);
      // A store each look at which is a round trip: a blocking receive looks
      // once, in the pass with a waiter, after watching (see watch_first_locked).
      const bool remote = !own && !removed_ && !quarantined_ && store_ && store_->looks_are_round_trips();
      const bool look_later = remote && !w && !nonblock && hangup_ == Errc::ok && !store_->answers_here();
      if (remote && w && readers_.empty()) watch_first_locked();
      if (store_) store_->receivers_parked(static_cast<uint32_t>(readers_.size() + (w ? 1 : 0)));
      if (!look_later && (own || readers_.empty())) out = take_locked(h, size, b);  // FIFO: no overtaking
      if (out) note_sender_locked(h, w ? w->pid : reader, *out);
      if (!out && hangup_ != Errc::ok) out = Outcome{hangup_};  // nothing will ever come
      if (!out && nonblock) out = Outcome{Errc::again};
      if (!out && w) {
        w->kind_ = Waiter::Kind::recv;
        w->handle_ = &h;
        w->want_ = size;
        park_locked(w, Waiter::Where::readers);
        if (store_->capacity() == 0) b.changed = true;  // a waiting receiver makes rendezvous senders writable
      }
    }
    if (out && w) w->state_ = Waiter::State::done;
  }
  if (!out && w && feeder_) feeder_->waiting(*this, false);
  return out;
}

void Mailbox::watch_first_locked() {
  // The watch a parked receive needs, set before its look: that look is then
  // also the re-check settle_locked would make after adding it, and a parked
  // receive costs one look, not two. A receive that finds a message leaves
  // the bits to settle_locked to take back.
  const uint32_t want = watch_ | kWatchReadable | kWatchParkedReceivers;
  if (want == watch_) return;
  store_->watch(want, weak_from_this());
  watch_ = want;
  std::atomic_thread_fence(std::memory_order_seq_cst);  // as in settle_locked: the watch before the look
}

void Mailbox::note_sender_locked(Handle& h, pid_t reader, const Outcome& o) {
  if (!o.has_from || reader <= 0) return;
  // Bounded: a reader asks right after its receive, so forgetting old
  // entries of long-gone threads loses nothing that matters.
  if (last_from_.size() >= 1024 && !last_from_.count(reader)) last_from_.clear();
  From& f = last_from_[reader];
  f.s = o.from;
  f.host = o.from_host;
  if (h.received.size() >= 1024 && !h.received.count(reader)) h.received.clear();
  h.received[reader] = Handle::Received{o.prio, o.from};
}

unsigned Mailbox::send_prio_locked(const Handle& h, pid_t tid) {
  auto it = h.next_prio.find(tid);
  return it == h.next_prio.end() ? h.prio : it->second;
}

Errc Mailbox::set_send_priority(Handle& h, pid_t tid, unsigned prio) {
  if (prio > mailbox::kMaxPriority) return Errc::invalid;
  Guard g(mu_);
  if (!h.can_write) return Errc::bad_fd;
  if (removed_) return removed_why_;
  if (prio > 0 && store_ && !store_->has_priorities()) return Errc::not_supported;
  // Bounded as `received`: a thread that set one and never sent holds an entry.
  if (h.next_prio.size() >= 1024 && !h.next_prio.count(tid)) return Errc::no_space;
  h.next_prio[tid] = prio;
  return Errc::ok;
}

Result<Handle::Received> Mailbox::received(Handle& h, pid_t tid) {
  Guard g(mu_);
  auto it = h.received.find(tid);
  if (it == h.received.end()) return Errc::no_data;
  return it->second;
}

std::optional<Sender> Mailbox::last_sender(pid_t reader) {
  Guard g(mu_);
  auto it = last_from_.find(reader);
  if (it == last_from_.end()) return std::nullopt;
  return it->second.s;
}

std::optional<std::string> Mailbox::last_sender_text(pid_t reader) {
  Guard g(mu_);
  auto it = last_from_.find(reader);
  if (it == last_from_.end()) return std::nullopt;
  return format_sender(it->second.s) + (it->second.host.empty() ? "" : " host=" + it->second.host);
}

void Mailbox::deliver_locked(Batch& b) {
  if (b.found_empty) return;  // nothing came since (and a look costs a round trip)
  while (!readers_.empty()) {
    Waiter* r = readers_.front();
    if (host_.dying(r->pid)) {  // a message handed to it now would be lost
      end_locked(r, Errc::interrupted, b);
      continue;
    }
    store_->receivers_parked(static_cast<uint32_t>(readers_.size()));
    auto o = take_locked(*r->handle_, r->want_, b);
    if (!o) break;
    if (o->err == Errc::io) break;  // the store is unreachable: it stays parked (Store: io)
    note_sender_locked(*r->handle_, r->pid, *o);
    unpark_locked(r);
    b.done.emplace_back(r, std::move(*o));
  }
}

// ---- sending ---------------------------------------------------------------

// Pushes as much of `j` as the ring takes now. may_push is false when another
// sender is queued ahead (FIFO).
Mailbox::Step Mailbox::run_send_locked(Waiter::SendJob& j, bool may_push, Batch& b) {
  for (;;) {
    if (j.awaiting_ack) {  // rendezvous: done only once a receiver has taken it
      if (store_->consumed_seq() <= j.seq) return Step::need_ack;
      j.awaiting_ack = false;
      j.done_bytes += j.msgs[j.next].size();
      j.next++;
    }
    if (j.next == j.msgs.size()) return Step::done;
    if (!may_push) return Step::need_space;
    const std::string& m = j.msgs[j.next];
    // Held bytes leave the quota as the push charges their record, so a
    // message the quota has room for is never refused for its own copy.
    const uint64_t lent = std::min<uint64_t>(j.held, m.size());
    host_.held().lend(lent);
    store_->receivers_waiting(!readers_.empty());  // they looked and found nothing
    store_->reads_arriving(reads_arriving_locked());
    auto r = store_->push(m, j.from, false, j.prio);
    if (!r) {
      host_.held().take_back(lent);
      b.contended |= r.error() == Errc::contended;
      if (r.error() == Errc::again || r.error() == Errc::contended) return Step::need_space;
      j.err = r.error();
      return Step::failed;
    }
    host_.held().forget(j.held_uid, lent);
    j.held -= lent;
    if (host_.held().per_user()) track_locked(*r, j.from.uid, m.size());
    b.pushed = b.changed = true;
    b.found_empty = false;
    if (store_->capacity() == 0) {
      j.awaiting_ack = true;
      j.seq = *r;
      deliver_locked(b);
      continue;
    }
    j.done_bytes += m.size();
    j.next++;
    if (settings_.framing != Framing::file && store_->full_after_push()) b.raise = true;
  }
}

// What a send job returns, and its effect on the open file's write buffer.
Outcome Mailbox::send_outcome_locked(Handle& h, Waiter::SendJob& j, Errc err) {
  const bool all = j.next == j.msgs.size();
  const uint64_t held = std::exchange(j.held, 0);
  switch (j.kind) {
    case Waiter::SendJob::Kind::datagram:
      host_.held().unhold(j.held_uid, held);
      return all ? Outcome{Errc::ok, {}, j.chunk} : Outcome{err};
    case Waiter::SendJob::Kind::flush:
      if (!all && h.wrefused == Errc::ok) {
        // Unsent: back to the open file for a later close, with its charge,
        // unless a write meanwhile refused the open file's message.
        h.wbuf.insert(0, j.msgs[0]);
        h.held += held;
        h.held_uid = j.held_uid;
        return Outcome{err};
      }
      host_.held().unhold(j.held_uid, held);
      return all ? Outcome{} : Outcome{err};
    case Waiter::SendJob::Kind::line:
      host_.held().unhold(j.held_uid, held);
      if (all) {
        h.wbuf = std::move(j.tail);
        trim_held_locked(h);
        return Outcome{Errc::ok, {}, j.chunk};
      }
      if (j.done_bytes > j.pre) {  // some lines went: a short write, the caller retries the rest
        h.wbuf.clear();
        trim_held_locked(h);
        return Outcome{Errc::ok, {}, j.done_bytes - j.pre};
      }
      trim_held_locked(h);
      return Outcome{err};
  }
  return Outcome{Errc::io};
}

bool Mailbox::library_receiver_sleeping() {
  // A hint only: one that leaves meanwhile costs the grace period.
  const uint32_t n = store_->sleeping_receivers();
  // Sleepers that let a grace period pass (a receiver killed while asleep
  // never takes its count back) are not counted again until one leaves.
  unresponsive_sleepers_ = std::min(unresponsive_sleepers_, n);
  return n > unresponsive_sleepers_;
}

std::optional<Outcome> Mailbox::send_locked(Handle& h, Waiter::SendJob job, bool nonblock, Waiter* w, Batch& b) {
  if (!w && !nonblock && store_->capacity() == 0) return std::nullopt;  // rendezvous always waits
  // A non-blocking rendezvous send with no receiver parked here but one
  // asleep in libmailbox waits a moment (kRendezvousGrace) for it to wake and
  // take the offer. It is offered once, by the pass that can wait: the first
  // pass (no waiter) only asks for one.
  const bool grace = nonblock && store_->capacity() == 0 && readers_.empty() && library_receiver_sleeping();
  if (!w && grace) return std::nullopt;
  Step s;
  for (;;) {
    s = run_send_locked(job, writers_.empty(), b);
    if (s == Step::need_ack && nonblock && !(w && grace)) {  // no receiver ready, and none to wait for
      const Store::Withdrawn wd = store_->try_withdraw(job.seq);
      if (wd == Store::Withdrawn::contended) {
        // It cannot be taken back without waiting: it stays on offer, counted as sent.
        job.awaiting_ack = false;
        job.done_bytes += job.msgs[job.next].size();
        job.next++;
        continue;
      }
      if (wd == Store::Withdrawn::taken_back) {
        job.awaiting_ack = false;
        b.popped = b.changed = true;  // the slot is free again: wake sleeping senders
        s = Step::need_space;
      } else if (store_->consumed_seq() > job.seq) {
        continue;  // another participant received it meanwhile
      } else {
        job.err = Errc::bad_message;  // neither queued nor received: the segment lies
        s = Step::failed;
      }
    }
    break;
  }
  if (s == Step::done) return send_outcome_locked(h, job, Errc::ok);
  if (s == Step::failed) return send_outcome_locked(h, job, job.err);
  if (!w) {
    if (nonblock || job.done_bytes > 0) return send_outcome_locked(h, job, Errc::again);
    return std::nullopt;  // nothing sent: the caller comes back with a waiter
  }
  // Non-blocking with a waiter: only an offer given its grace period waits.
  if (nonblock && s != Step::need_ack) return send_outcome_locked(h, job, Errc::again);
  if (job.kind != Waiter::SendJob::Kind::flush && !job.awaiting_ack) {
    // A parked write's message stays in the daemon's memory: it takes quota.
    uint64_t rest = 0;
    for (size_t i = job.next; i < job.msgs.size(); i++) rest += job.msgs[i].size();
    if (Errc e = host_.held().hold(job.from.uid, rest); e != Errc::ok) return send_outcome_locked(h, job, e);
    job.held = rest;
    job.held_uid = job.from.uid;
  }
  w->kind_ = Waiter::Kind::send;
  w->handle_ = &h;
  w->job_ = std::move(job);
  park_locked(w, s == Step::need_ack ? Waiter::Where::acks : Waiter::Where::writers,
              nonblock ? std::optional(kRendezvousGrace) : std::nullopt);
  if (settings_.framing != Framing::file) b.raise = true;
  // Parked, it would hold the inode lock the owner's call is about to wait
  // for (a write does; a close does not).
  if (w->job_.kind != Waiter::SendJob::Kind::flush && clearing_locked(w->job_.from.uid))
    end_locked(w, Errc::interrupted, b);
  return std::nullopt;
}

std::optional<Outcome> Mailbox::write(Handle& h, const char* p, size_t n, bool nonblock, const Sender& caller,
                                      Waiter* w) {
  const Sender& from = h.as ? *h.as : caller;
  HeldQuota& held = host_.held();
  // Over the user's bound by what the daemon last knew: first forget what
  // receivers took since (takes other mailboxes' locks, so not under ours).
  if (held.per_user() && held.admit(from.uid, n) != Errc::ok) held.reconcile_all();
  std::optional<Outcome> out;
  {
    Op op(*this);
    Batch& b = op.b;
    h.nonblock = nonblock;
    bool keep_prio = false;
    if (w && w->interrupted_) {
      out = Outcome{Errc::interrupted};
    } else if (!h.can_write) {
      out = Outcome{Errc::bad_fd};
    } else if (removed_) {
      out = Outcome{removed_why_};
    } else if (quarantined_) {
      out = Outcome{Errc::bad_message};
    } else if (h.framing == Framing::file) {
      keep_prio = true;  // for the close that commits the message
      Errc e = h.wrefused;
      if (e == Errc::ok && h.wbuf.size() + n > settings_.max_message) e = Errc::msg_size;
      if (e == Errc::ok) e = held.hold(h.held ? h.held_uid : from.uid, n);
      if (e != Errc::ok) {
        // Refused whole: nothing of it may be sent by the close that follows.
        drop_wbuf_locked(h);
        h.wrefused = e;
        out = Outcome{e};
      } else {
        if (!h.held) h.held_uid = from.uid;
        h.held += n;
        h.wbuf.append(p, n);
        out = Outcome{Errc::ok, {}, n};
      }
    } else if (held.per_user() && held.admit(from.uid, n) != Errc::ok) {
      out = Outcome{Errc::quota};
    } else {
      Waiter::SendJob job;
      job.from = from;
      job.prio = send_prio_locked(h, caller.pid);
      job.chunk = n;
      if (h.framing == Framing::datagram) {
        job.kind = Waiter::SendJob::Kind::datagram;
        if (n > kMaxDatagram || n > settings_.max_message) out = Outcome{Errc::msg_size};
        else job.msgs.emplace_back(p, n);
      } else {
        job.kind = Waiter::SendJob::Kind::line;
        job.pre = h.wbuf.size();
        std::string all = h.wbuf;
        all.append(p, n);
        size_t start = 0;
        for (size_t i = 0; i < all.size(); i++) {
          if (all[i] != '\n') continue;
          job.msgs.emplace_back(all, start, i + 1 - start);
          start = i + 1;
        }
        job.tail.assign(all, start, std::string::npos);
        bool too_big = job.tail.size() > settings_.max_message;
        for (auto& m : job.msgs) too_big = too_big || m.size() > settings_.max_message;
        Errc e = Errc::ok;
        if (too_big) {
          // A line too long is refused whole, with the part of it an earlier
          // write left (the partial line) when it is the first one.
          const std::string& first = job.msgs.empty() ? job.tail : job.msgs.front();
          if (first.size() > settings_.max_message) drop_wbuf_locked(h);
          out = Outcome{Errc::msg_size};
        } else if (job.tail.size() > h.held &&
                   (e = held.hold(h.held ? h.held_uid : from.uid, job.tail.size() - h.held)) != Errc::ok) {
          out = Outcome{e};  // no room to keep the new partial line: nothing is sent
        } else {
          // The partial line this write leaves is held from now on.
          if (job.tail.size() > h.held) {
            if (!h.held) h.held_uid = from.uid;
            h.held = job.tail.size();
          }
          if (job.msgs.empty()) {
            h.wbuf = std::move(job.tail);
            trim_held_locked(h);
            out = Outcome{Errc::ok, {}, n};
          }
        }
      }
      // A line write that only kept a partial line leaves the thread's
      // priority to the write or close that sends it.
      keep_prio = out && out->err == Errc::ok && job.msgs.empty() && h.framing != Framing::datagram;
      if (!out) out = send_locked(h, std::move(job), nonblock, w, b);
    }
    // Any other write through a datagram or line file uses the thread's
    // priority, done or parked (a first pass that will come back with a
    // waiter changed nothing): a failed send leaves nothing behind.
    if (!keep_prio && (out || w)) h.next_prio.erase(caller.pid);
    if (out && w) w->state_ = Waiter::State::done;
  }
  return out;
}

std::optional<Outcome> Mailbox::flush(Handle& h, const Sender& caller, Waiter* w, bool closing) {
  // A writer killed by a signal is closing its files on the way out: what it
  // wrote is an unfinished message, not one to send (read before any lock).
  // Only a handle holding unsent bytes asks. The close that execve does of a
  // close-on-exec descriptor comes here with the exec's locks held, and the
  // probe answers it without waiting for them (proc::killed_by_signal).
  if (closing && !w && h.can_write && has_unsent(h) && proc::killed_by_signal(caller.pid)) {
    discard_unsent(h);
    return Outcome{};
  }
  const Sender& from = h.as ? *h.as : caller;
  std::optional<Outcome> out;
  {
    Op op(*this);
    Batch& b = op.b;
    bool keep_prio = false;  // the thread's priority is used by a commit, whatever its result
    if (w && w->interrupted_) {
      out = Outcome{Errc::interrupted};
    } else if (h.wrefused != Errc::ok) {  // the message was refused at a write: nothing to send
      out = Outcome{std::exchange(h.wrefused, Errc::ok)};
    } else if (!h.can_write || h.wbuf.empty() || h.framing == Framing::datagram) {
      keep_prio = true;  // nothing to commit
      out = Outcome{};
    } else if (removed_) {
      drop_wbuf_locked(h);
      out = Outcome{removed_why_};
    } else if (quarantined_) {
      drop_wbuf_locked(h);
      out = Outcome{Errc::bad_message};
    } else {
      Waiter::SendJob job;
      job.kind = Waiter::SendJob::Kind::flush;
      job.from = from;
      job.prio = send_prio_locked(h, caller.pid);
      // The job owns the message and its charge: a concurrent close of the
      // same open file (fork, dup) finds nothing left to send. A send that
      // fails gives both back.
      std::string msg = std::move(h.wbuf);
      h.wbuf.clear();
      job.msgs.push_back(msg);
      const uint64_t charge = std::min<uint64_t>(h.held, msg.size());
      job.held = charge;
      job.held_uid = h.held_uid;
      h.held -= charge;
      out = send_locked(h, std::move(job), h.nonblock, w, b);
      if (!out && !w) {  // nothing happened: the caller comes back with a waiter
        h.wbuf.insert(0, msg);
        h.held += charge;
      }
    }
    if (!keep_prio && (out || w)) h.next_prio.erase(caller.pid);
    if (out && w) w->state_ = Waiter::State::done;
  }
  return out;
}

// ---- parked calls ----------------------------------------------------------

void Mailbox::park_locked(Waiter* w, Waiter::Where where, std::optional<std::chrono::milliseconds> grace) {
  w->state_ = Waiter::State::parked;
  w->id_ = next_waiter_id_++;
  parked_[w->id_] = w;
  list_locked(w, where, false);
  w->grace_ = grace.has_value();
  if (grace || settings_.timeout_ms > 0) {
    auto when = Timers::Clock::now() + (grace ? *grace : std::chrono::milliseconds(settings_.timeout_ms));
    w->timer_ = host_.timers().add(when, [weak = weak_from_this(), id = w->id_] {
      if (auto box = weak.lock()) box->expire(id);
    });
  }
}

void Mailbox::list_locked(Waiter* w, Waiter::Where where, bool front) {
  std::list<Waiter*>* l = where == Waiter::Where::readers   ? &readers_
                          : where == Waiter::Where::writers ? &writers_
                                                            : &acks_;
  w->where_ = where;
  w->pos_ = front ? l->insert(l->begin(), w) : l->insert(l->end(), w);
}

void Mailbox::unlist_locked(Waiter* w) {
  switch (w->where_) {
    case Waiter::Where::readers: readers_.erase(w->pos_); break;
    case Waiter::Where::writers: writers_.erase(w->pos_); break;
    case Waiter::Where::acks: acks_.erase(w->pos_); break;
    case Waiter::Where::none: break;
  }
  w->where_ = Waiter::Where::none;
}

void Mailbox::unpark_locked(Waiter* w) {
  unlist_locked(w);
  parked_.erase(w->id_);
  if (w->timer_) host_.timers().cancel(w->timer_);
  w->timer_ = 0;
  w->state_ = Waiter::State::done;
}

// Ends a parked call early (signal, timeout, delete). A rendezvous message
// not yet received is taken back; one that was received counts as sent.
void Mailbox::end_locked(Waiter* w, Errc err, Batch& b) {
  unpark_locked(w);
  if (w->kind_ == Waiter::Kind::recv) {
    b.done.emplace_back(w, Outcome{err});
    return;
  }
  auto& j = w->job_;
  if (j.awaiting_ack) {
    // Received, or (a lock held elsewhere) not taken back without waiting:
    // then it stays on offer and counts as sent.
    if (store_ && !removed_ && !quarantined_ && store_->try_withdraw(j.seq) != Store::Withdrawn::taken_back) {
      j.done_bytes += j.msgs[j.next].size();
      j.next++;
    }
    j.awaiting_ack = false;
    b.changed = b.popped = true;  // the slot is free again: wake sleeping senders
  }
  b.done.emplace_back(w, send_outcome_locked(*w->handle_, j, err));
}

// Finishes every parked call the ring can now satisfy, in FIFO order.
void Mailbox::drain_locked(Batch& b) {
  if (removed_) return;
  // A parked send that finds the store unreachable stays parked (Store: io).
  auto run = [&](Waiter* s) REQUIRES(mu_) {
    const Step st = run_send_locked(s->job_, true, b);
    if (st != Step::failed || s->job_.err != Errc::io) return st;
    s->job_.err = Errc::ok;
    return Step::need_space;
  };
  for (size_t before = SIZE_MAX; before != b.done.size();) {
    before = b.done.size();
    deliver_locked(b);
    for (auto it = acks_.begin(); it != acks_.end();) {
      Waiter* s = *it++;
      Step st = run(s);
      if (st == Step::need_ack) continue;
      if (st == Step::need_space) {
        unlist_locked(s);
        list_locked(s, Waiter::Where::writers, true);  // already admitted: first in line
        continue;
      }
      unpark_locked(s);
      b.done.emplace_back(s, send_outcome_locked(*s->handle_, s->job_, st == Step::failed ? s->job_.err : Errc::ok));
    }
    while (!writers_.empty()) {
      Waiter* s = writers_.front();
      Step st = run(s);
      if (st == Step::need_space) break;
      if (st == Step::need_ack) {
        unlist_locked(s);
        list_locked(s, Waiter::Where::acks, false);
        continue;
      }
      unpark_locked(s);
      b.done.emplace_back(s, send_outcome_locked(*s->handle_, s->job_, st == Step::failed ? s->job_.err : Errc::ok));
    }
  }
}

// Ends every operation: finishes what became ready, collects poll tokens to
// notify, wakes other participants and updates what the daemon watches.
void Mailbox::settle_locked(Batch& b) {
  drain_locked(b);
  if (!quarantined_ && !removed_ && store_ && store_->corrupt()) quarantine_locked(b);
  if (b.contended) retry_later_locked();
  // Watch bits first: the re-check that adding one requires may finish more
  // calls, whose effects the notifications below must include.
  while (store_ && !quarantined_) {
    const bool polls = !handles_.empty() && !b.changed;  // a change consumes the armed tokens
    // While calls wait for a lock held elsewhere, its holder's next change of
    // either kind rings the doorbell (sooner than the retry timer).
    const bool any = contended_ || polls;
    const uint32_t want = (readers_.empty() && !any ? 0u : kWatchReadable) |
                          (writers_.empty() && acks_.empty() && !any ? 0u : kWatchWritable) |
                          (readers_.empty() ? 0u : kWatchParkedReceivers) | (polls ? kWatchPolled : 0u);
    if (want == watch_) break;
    // Made visible (seq_cst) before the re-check below: either it sees the
    // other participant's change, or the store tells us (Store::watch).
    store_->watch(want, weak_from_this());
    const bool added = (want & ~watch_) != 0;
    watch_ = want;
    if (!added) break;
    std::atomic_thread_fence(std::memory_order_seq_cst);
    b.found_empty = false;  // this look is the re-check: it must be made
    drain_locked(b);
  }
  reconcile_locked();
  if (b.contended) retry_later_locked();  // met by the re-check above: the timer covers it
  if (b.changed) {
    for (Handle* h : handles_) b.polls.push_back(std::move(h->poll));
    handles_.clear();
  }
  if (store_ && !quarantined_) {
    store_->receivers_parked(static_cast<uint32_t>(readers_.size()));
    store_->reads_arriving(reads_arriving_locked());  // a message taken for them stays
    store_->after_change(b.pushed, b.popped);
    if (b.raise) b.raise_to = reported_size_locked(store_->stats());
  }
}

void Mailbox::retry_later_locked() {
  if (readers_.empty() && writers_.empty() && acks_.empty()) return;  // nobody waits for it
  contended_ = true;
  if (retry_timer_) return;
  retry_timer_ = host_.timers().add(Timers::Clock::now() + retry_delay_, [weak = weak_from_this()] {
    if (auto box = weak.lock()) box->retry();
  });
  retry_delay_ = std::min(retry_delay_ * 2, kRetryMax);
}

void Mailbox::retry() {
  {
    Op op(*this);
    retry_timer_ = 0;
    if (removed_ || quarantined_ || !store_) return;
    contended_ = false;  // set again if the drain meets the lock still held
    op.settle();
    if (!contended_) retry_delay_ = kRetryFirst;
  }
}

void Mailbox::quarantine_locked(Batch& b) {
  quarantined_ = true;
  auto where = store_->locator();
  log(LogLevel::error,
      "mailbox %llu: segment %s is corrupt; quarantined: its calls fail with EBADMSG until it is deleted",
      static_cast<unsigned long long>(id_), where ? where->c_str() : "(gone)");
  for (auto* l : {&readers_, &writers_, &acks_})
    while (!l->empty()) end_locked(l->front(), Errc::bad_message, b);
  b.changed = true;  // armed polls fire, and then see POLLERR
  contended_ = false;
  if (retry_timer_) host_.timers().cancel(retry_timer_);
  retry_timer_ = 0;
  if (watch_) store_->watch(0, {});
  watch_ = 0;
  store_->mark_corrupt();  // library participants stop too; their sleepers wake and see it
}

void Mailbox::commit(Batch& b, Waiter* interrupted) {
  // Before any reply: a caller that returns from a change sees it in stat.
  if (b.inval_attrs)
    if (KernelCache* k = host_.kernel()) k->invalidate_attrs(id_);
  for (auto& t : b.polls)
    if (t) t->notify();
  if (b.raise)
    if (KernelCache* k = host_.kernel()) k->raise_size(id_, b.raise_to);
  for (auto& [w, o] : b.done) w->finish(std::move(o), w == interrupted);
}

void Mailbox::interrupt(Waiter* w) {
  {
    Op op(*this);
    Batch& b = op.b;
    if (w->state_ == Waiter::State::fresh) {
      w->interrupted_ = true;  // the caller sees it before it parks
      return;
    }
    if (w->state_ != Waiter::State::parked) return;
    end_locked(w, Errc::interrupted, b);
    op.interrupted = w;
  }
}

void Mailbox::expire(uint64_t waiter_id) {
  {
    Op op(*this);
    Batch& b = op.b;
    auto it = parked_.find(waiter_id);
    if (it == parked_.end()) return;
    it->second->timer_ = 0;
    if (it->second->grace_)  // nobody woke for it: do not wait for these sleepers again
      unresponsive_sleepers_ = store_->sleeping_receivers();
    end_locked(it->second, it->second->grace_ ? Errc::again : Errc::timed_out, b);
  }
}

void Mailbox::clear_for(uid_t uid, pid_t tid, long nr) {
  {
    Op op(*this);
    Batch& b = op.b;
    clearing_ = Clearing{tid, uid, nr, std::chrono::steady_clock::now() + kClearingLimit};
    std::vector<Waiter*> others;
    for (auto* l : {&writers_, &acks_})
      for (Waiter* w : *l)  // a parked close holds no inode lock
        if (w->job_.from.uid != uid && w->job_.kind != Waiter::SendJob::Kind::flush) others.push_back(w);
    for (Waiter* w : others) end_locked(w, Errc::interrupted, b);
  }
}

bool Mailbox::clearing_locked(uid_t writer) {
  if (clearing_.tid == 0 || writer == clearing_.uid) return false;
  // Running, it is on its way to the inode lock (or out of the call: then
  // the writer's next attempt finds it returned).
  auto sc = std::chrono::steady_clock::now() < clearing_.until ? proc::current_syscall(clearing_.tid) : std::nullopt;
  if (sc && (sc->nr == clearing_.nr || sc->nr == proc::kSyscallRunning)) return true;
  clearing_ = Clearing{};  // that call has returned
  return false;
}

void Mailbox::service() {
  {
    Op op(*this);
    Batch& b = op.b;
    if (!store_ || quarantined_ || !store_->take_kick()) return;
    b.changed = true;
  }
}

void Mailbox::notify_polls() {
  {
    Op op(*this);
    Batch& b = op.b;
    b.changed = true;
  }
}

void Mailbox::sweep() {
  Guard g(mu_);  // changes no waiter, no queue: nothing to settle
  // Idle means nobody waits here either: a parked call or an armed poll (a
  // rendezvous sender polling for a receiver) keeps the ring as it is. The
  // wake of stranded library sleepers is due whatever the daemon's callers do.
  const bool may_trim = readers_.empty() && writers_.empty() && handles_.empty();
  if (store_ && !removed_ && !quarantined_) store_->sweep(may_trim);
}

void Mailbox::remove(Errc why, bool discard) {
  {
    Op op(*this);
    Batch& b = op.b;
    if (removed_) return;
    for (auto* l : {&readers_, &writers_, &acks_})
      while (!l->empty()) end_locked(l->front(), why, b);
    removed_ = true;
    removed_why_ = why;
    b.changed = true;
    op.settle();
    watch_ = 0;
    if (retry_timer_) host_.timers().cancel(retry_timer_);
    retry_timer_ = 0;
    // Messages are discarded, other participants woken; a corrupt store's
    // counters are not trusted.
    if (discard) store_->destroy(!quarantined_);
    store_.reset();      // frees the memory now, not at the last close
    reconcile_locked();  // nothing queued is left
  }
}

void Mailbox::remove_at_last_close() {
  {
    Guard g(mu_);
    remove_at_last_close_ = true;
    if (open_files_ > 0) return;  // the last release() removes it
  }
  remove();
}

// ---- direct communication ---------------------------------------------------

void Mailbox::hang_up(Errc why) {
  {
    Op op(*this);
    Batch& b = op.b;
    hangup_ = why;
    while (!readers_.empty()) end_locked(readers_.front(), why, b);
    b.changed = true;  // pollers see POLLHUP
  }
}

std::optional<Outcome> Mailbox::take_message() {
  std::optional<Outcome> out;
  {
    Op op(*this);
    Batch& b = op.b;
    if (removed_ || quarantined_ || !readers_.empty() || !store_) return std::nullopt;
    std::string msg;
    auto p = store_->pop(msg);
    if (!p) return std::nullopt;
    b.popped = b.changed = true;
    out = Outcome{Errc::ok, std::move(msg)};
    out->from = p->from;
    out->has_from = true;
  }
  return out;
}

Errc Mailbox::inject(std::string_view msg, const Sender& from) {
  {
    Op op(*this);
    Batch& b = op.b;
    if (removed_ || !store_) return Errc::removed;
    if (quarantined_) return Errc::bad_message;
    auto r = store_->push(msg, from, /*force=*/true);
    if (!r) return r.error();
    b.pushed = b.changed = true;
    b.found_empty = false;
  }
  return Errc::ok;
}

// ---- inspection and settings -------------------------------------------------

uint64_t Mailbox::reported_size_locked(const QueueStats& st) const {
  // A datagram/line write larger than the kernel's cached size takes the
  // inode lock exclusively, and a blocked one then stalls every other writer
  // (and rm) in the kernel. While such a mailbox is full, report at least the
  // largest datagram so that blocked writers wait here, side by side.
  if (settings_.framing == Framing::file) return st.bytes;
  const bool full = store_->capacity() == 0 ||
                    (store_->capacity() != layout::kUnbounded && st.count >= store_->capacity());
  if (!full) return st.bytes;
  return std::max<uint64_t>(st.bytes, std::min<uint64_t>(settings_.max_message, kMaxDatagram));
}

Settings Mailbox::settings() {
  Guard g(mu_);
  return settings_;
}

Result<std::vector<std::pair<unsigned, uint64_t>>> Mailbox::priorities() {
  Op op(*this, /*settle=*/false);  // a look, as info()
  if (removed_) return Errc::removed;
  if (quarantined_ || !store_) return Errc::bad_message;
  auto r = store_->priority_counts();
  if (!r && r.error() == Errc::contended) return Errc::busy;
  if (!r && store_->corrupt()) quarantine_locked(op.b);
  return r;
}

MailboxInfo Mailbox::info() {
  MailboxInfo i;
  {
    Op op(*this, /*settle=*/false);  // a look: only a quarantine it finds is committed
    Batch& b = op.b;
    i.settings = settings_;
    i.removed = removed_;
    if (!store_) return i;
    store_->load_settings(&settings_);  // as every daemon of a shared store has them
    i.settings = settings_;
    // Never waits: with a lock held elsewhere these are the counters as last
    // written; a quarantined segment is not read at all.
    if (!quarantined_) {
      last_stats_ = store_->stats();
      if (!removed_ && store_->corrupt()) quarantine_locked(b);  // found by this look
    }
    i.seg = last_stats_;
    i.reported_size = reported_size_locked(i.seg);
    i.locator = store_->locator();
    i.armed_polls = handles_.size();
    for (Waiter* w : readers_) i.blocked_receivers.push_back(w->pid);
    for (Waiter* w : writers_) i.blocked_senders.push_back(w->pid);
    for (Waiter* w : acks_) i.blocked_senders.push_back(w->pid);
  }
  return i;
}

StatInfo Mailbox::stat() {
  StatInfo i;
  Op op(*this, /*settle=*/false);  // a look, as info()
  if (!store_) return i;
  store_->load_settings(&settings_);
  if (!quarantined_) {
    last_stats_ = store_->stats();
    if (!removed_ && store_->corrupt()) quarantine_locked(op.b);  // found by this look
  }
  i.seg = last_stats_;
  i.reported_size = reported_size_locked(i.seg);
  // Relaxed: expose() stores it under mu_, which is held here.
  i.cacheable = !removed_ && !exposed_.load(std::memory_order_relaxed);
  if (i.cacheable) attrs_cached_ = true;
  return i;
}

void Mailbox::expose() {
  Op op(*this, /*settle=*/false);
  // Release: pairs with the acquire in attrs_cacheable() (a hint); stat() reads it under mu_.
  exposed_.store(true, std::memory_order_release);
  op.b.attrs = true;  // what the kernel cached is dropped at the end of op
}

unsigned Mailbox::poll(Handle& h, std::unique_ptr<PollToken> token) {
  if (wants_feed(h)) feeder_->feed(*this);
  const bool arming = token != nullptr;
  std::unique_ptr<PollToken> old;
  unsigned ev = 0;
  {
    Op op(*this);
    // A probe after a library change (kWatchPolled): the armed polls fire
    // before this reply, so an epoll sees the change when the call returns.
    if (store_ && !quarantined_ && store_->take_kick()) op.b.changed = true;
    if (token) {
      if (!h.poll) handles_.push_back(&h);
      old = std::move(h.poll);
      h.poll = std::move(token);
    }
    // Arming may set watch bits and re-check the ring, finishing parked calls.
    op.settle();
    if (removed_ || quarantined_) {
      ev = POLLERR | POLLHUP;
      if (h.roff < h.rbuf.size()) ev |= POLLIN | POLLRDNORM;
    } else {
      const bool readable = h.roff < h.rbuf.size() || (h.framing == Framing::file && h.got_message) ||
                            (readers_.empty() && store_->stats().count > 0);
      // File framing too: its close sends, and waits while the mailbox is full.
      const bool writable = (writers_.empty() && acks_.empty() && !store_->full() &&
                             (store_->capacity() != 0 || !readers_.empty() || library_receiver_sleeping()));
      if (h.can_read && readable) ev |= POLLIN | POLLRDNORM;
      if (h.can_write && writable) ev |= POLLOUT | POLLWRNORM;
      if (hangup_ != Errc::ok && store_->stats().count == 0) ev |= POLLHUP;
    }
  }
  if (arming && feeder_) feeder_->waiting(*this, true);
  return ev;
}

// A resize takes both segment locks. A participant holding one for a moment
// (a library send) makes it try again with mu_ released, for a bounded time
// (the caller is the owner's setxattr), then EBUSY: never an unbounded wait.
Errc Mailbox::set(std::string_view name, std::string_view value) {
  constexpr int kTries = 200;  // 1 ms apart
  for (int i = 0;; i++) {
    const Errc e = set_once(name, value);
    if (e != Errc::contended) return e;
    if (i == kTries) return Errc::busy;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

Errc Mailbox::set_once(std::string_view name, std::string_view value) {
  Errc err = Errc::ok;
  {
    Op op(*this);
    Batch& b = op.b;
    if (removed_) return Errc::removed;
    if (quarantined_) return Errc::bad_message;
    store_->load_settings(&settings_);  // compared with what every daemon has now
    Settings n = settings_;
    err = apply_setting(n, name, value);
    if (err != Errc::ok) return err;
    if (n.framing != settings_.framing || n.timeout_ms != settings_.timeout_ms ||
        n.send_priority != settings_.send_priority)
      if (Errc e = store_->save_settings(n); e != Errc::ok) return e;  // not_supported: a store refusing it
    if (n.capacity != settings_.capacity || n.max_message != settings_.max_message) {
      // A new store of the new geometry, with the queued messages moved in order.
      if (!acks_.empty()) return Errc::busy;
      // UINT64_MAX: it cannot tell now (a lock held elsewhere): set() tries again.
      const uint64_t longest = store_->max_queued_len();
      if (longest == UINT64_MAX) return Errc::contended;
      if (longest > n.max_message) return Errc::busy;
      uint64_t first = 0;
      if (Errc e = store_->reshape(n, &first); e != Errc::ok) return e;  // contended: set() tries again
      // The moved messages are numbered from 0 in the new store, in order.
      while (!queued_.empty() && queued_.front().seq < first) {  // received before the move
        host_.held().dequeued(queued_.front().uid, queued_.front().bytes);
        queued_.pop_front();
      }
      for (Queued& q : queued_) q.seq -= first;
      b.changed = true;
    }
    settings_ = n;
    b.attrs = true;  // the framing decides st_size of a full mailbox
  }
  return err;
}

}  // namespace mbx
