// SPDX-License-Identifier: MIT
// The storage seam: where one mailbox's messages live. The daemon's mailbox
// logic (core/mailbox.h) keeps the parked calls, the framing and the
// settings; a Store keeps the bytes, the counters, and the wake-ups between
// the daemon and the store's other participants. Today's store is a
// shared-memory segment (core/shm_store.h); docs/architecture.md says what
// another must guarantee.
//
// Every call returns at once. A call that cannot proceed because another
// participant holds the storage returns Errc::contended having changed
// nothing (the mailbox parks its caller and tries again); bad_message means
// the storage is corrupt (the mailbox quarantines itself); io means it
// cannot be reached now (a server away): a new call fails with EIO, a
// parked one stays parked and is tried again at the store's next kick.
// Calls on one Store are serialised by its mailbox's lock.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/errc.h"
#include "core/settings.h"

namespace mbx {

// A mailbox's counters, as user.mailbox.* shows them.
struct QueueStats {
  uint64_t count = 0, bytes = 0, record_bytes = 0;
  uint64_t total_sent = 0, total_received = 0, lost = 0;
  uint64_t next_seq = 0, consumed_seq = 0;
  int64_t last_send_ns = 0, last_recv_ns = 0;
  uint64_t returned = 0;  // received through a daemon that died, queued again (Redis; 0 elsewhere)
};

// Told when another participant changed a watched store (see Store::watch).
class StoreListener {
 public:
  virtual ~StoreListener() = default;
  // Called with no core lock held, from the store's notification thread.
  virtual void service() = 0;
};

// Bits of Store::watch(): which changes by other participants to be told of.
// kWatchParkedReceivers: receive calls are parked (no kick; see layout.h, mq_notify).
// kWatchPolled: poll handles are armed (a participant may probe the file).
enum : uint32_t { kWatchReadable = 1, kWatchWritable = 2, kWatchParkedReceivers = 4, kWatchPolled = 8 };

class Store {
 public:
  virtual ~Store() = default;

  // ---- messages ----
  // Appends one message at priority `prio` (0..mailbox::kMaxPriority);
  // returns its seq (0-based, in send order). again: full; no_space/quota:
  // the mount's memory quota; msg_size: too large; not_supported: a
  // priority > 0 the storage cannot keep (an older segment).
  // force: ignore capacity and quota (a message counted elsewhere).
  virtual Result<uint64_t> push(std::string_view msg, const Sender& from, bool force = false, unsigned prio = 0) = 0;
  // Said before each push: receive calls of this daemon wait for a message.
  // A store that can then move the oldest message to them in the push's own
  // step does (its next pop answers it without looking); it gives it back
  // at after_change() if no receive took it.
  virtual void receivers_waiting(bool) {}
  // Said before each push and before each after_change(): receive calls of
  // this daemon are on their way (to the mailbox lock). A push may take for
  // them as for waiting ones, except in a rendezvous mailbox (as the store
  // knows it then: a take there counts as received and acks the sender);
  // after_change() keeps what was taken while they are still coming.
  virtual void reads_arriving(bool) {}
  // How many receive calls of this daemon are parked (before a look that
  // parks the caller if it finds nothing, counting it), said before each
  // look and at the end of each hold. A store that other daemons push to
  // tells them, so that a push through them hands a message to a receive
  // parked here (Redis).
  virtual void receivers_parked(uint32_t) {}
  struct Popped {
    uint64_t seq;
    Sender from;
    unsigned prio = 0;
    std::string host;  // the sending host, for a store shared across hosts; empty otherwise
  };
  // Removes the next message: the oldest of the highest priority (FIFO
  // within a priority), appending its payload to `out`. again: empty.
  virtual Result<Popped> pop(std::string& out) = 0;
  // A store that keeps a popped message in flight until its reader has it
  // (Redis: a daemon that dies mid-reply leaves it to be returned) drops it
  // on ack(seq), or puts it back at the front on unpop(seq) (the reply was
  // not sent). The shared-memory store hands the message over in pop itself:
  // ack is a no-op there, unpop not_supported.
  virtual Errc ack(uint64_t seq) = 0;
  virtual Errc unpop(uint64_t seq) = 0;
  // True if popped messages wait for ack/unpop (the mailbox then says which).
  virtual bool keeps_in_flight() const = 0;
  // False if every push above priority 0 is refused (not_supported): a
  // Redis mailbox is one list in send order.
  virtual bool has_priorities() const { return true; }
  // True if every look at the store is a round trip to a server: a blocking
  // receive then watches first and looks once (Mailbox::read), instead of
  // looking, watching and looking again.
  virtual bool looks_are_round_trips() const { return false; }
  // A look now is answered without a round trip: a message is already taken
  // for this daemon's receives (receivers_waiting, reads_arriving, a
  // hand-off heard of).
  virtual bool answers_here() { return false; }
  // Payload length of the next message. again: empty.
  virtual Result<uint32_t> peek_len() = 0;
  // Queued messages per priority, highest first; contended: ask again later.
  virtual Result<std::vector<std::pair<unsigned, uint64_t>>> priority_counts() = 0;
  // Takes back message `seq` if it is still the unreceived one (an
  // interrupted rendezvous send).
  enum class Withdrawn { taken_back, received, contended };
  virtual Withdrawn try_withdraw(uint64_t seq) = 0;
  // Every message with a lower seq has been received.
  virtual uint64_t consumed_seq() = 0;
  // Messages ever removed (acquire: what was pushed below it is gone).
  virtual uint64_t removed_count() = 0;
  // A push of one message would find the mailbox full by count.
  virtual bool full() = 0;
  // Right after a successful push: it left the mailbox full by count. A
  // store whose push learns that in the same step answers without looking.
  virtual bool full_after_push() { return full(); }
  virtual uint64_t capacity() const = 0;
  // Largest payload queued; UINT64_MAX when it cannot tell.
  virtual uint64_t max_queued_len() = 0;
  // Never waits: with the storage held elsewhere, the counters as last published.
  virtual QueueStats stats() = 0;

  // ---- health ----
  virtual bool corrupt() = 0;
  // Marks the storage corrupt so that every participant stops using it.
  virtual void mark_corrupt() = 0;

  // ---- wake-ups ----
  // Sets which changes by other participants `listener` is told of (0: none).
  // Made visible before the caller re-checks the ring (seq_cst): either the
  // re-check sees the other participant's change, or it tells the listener.
  virtual void watch(uint32_t bits, const std::weak_ptr<StoreListener>& listener) = 0;
  // True once per notification since the last call: the store changed.
  virtual bool take_kick() = 0;
  // The daemon pushed/popped: wakes other participants sleeping on it.
  // Called at the end of every mailbox-lock hold that settles (every push
  // and pop is made in one), changed or not.
  virtual void after_change(bool pushed, bool popped) = 0;
  // Other participants asleep waiting for a message (a rendezvous send
  // offers to them); 0 for stores without such participants.
  virtual uint32_t sleeping_receivers() = 0;

  // ---- settings several daemons share ----
  // A store other daemons use keeps the settings they all obey: save_settings
  // records the framing and timeout_ms (capacity and max_message go with
  // reshape); not_supported for one it cannot keep (a send priority).
  // load_settings overwrites `*s` with the shared settings (one look at the
  // store). Stores of one daemon keep none: the daemon's own are the truth.
  virtual Errc save_settings(const Settings&) { return Errc::ok; }
  virtual void load_settings(Settings*) {}

  // ---- lifecycle ----
  // New capacity/max_message with the queued messages kept in order (and
  // their priorities); the
  // moved messages are renumbered from 0, and `*first` is the old seq of
  // the first of them. busy if they would not fit, contended: try again.
  virtual Errc reshape(const Settings& s, uint64_t* first) = 0;
  // Deletes the storage: queued messages are discarded (their quota given
  // back unless `trust_counters` is false: a corrupt store's counters lie),
  // other participants are woken and see it deleted.
  virtual void destroy(bool trust_counters) = 0;
  // Where other participants find it (user.mailbox.segment); io if it is gone.
  virtual Result<std::string> locator() const = 0;
  // Called every Mount idle sweep. A store that nobody (daemon or other
  // participant) has changed since the previous call wakes its sleeping
  // participants to look again (a wake-up may have been lost with a killed
  // waker); if it is also empty and `may_trim`, it gives its memory back (the
  // next message allocates again). A store with neither ignores it.
  virtual void sweep(bool may_trim) { (void)may_trim; }
};

}  // namespace mbx
