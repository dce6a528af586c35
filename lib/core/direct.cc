// SPDX-License-Identifier: MIT
#include "core/direct.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>

#include "base/proc.h"

namespace mbx {

namespace {
using Guard = MutexLock;

// The live process that thread `tid` belongs to.
Result<proc::Status> proc_info(pid_t tid) {
  auto st = proc::status(tid);
  if (!st) return kNoProcess;
  return *st;
}

Result<uint64_t> proc_start(pid_t pid) {
  auto t = proc::start_time(pid);
  if (!t) return kNoProcess;
  return *t;
}

}  // namespace

struct Direct::Proc {
  ProcId id;
  uid_t ruid = 0, suid = 0;
  std::shared_ptr<UniqueFd> pidfd;  // shared: the thread polls a copy while exited() drops this one
  std::shared_ptr<Mailbox> any;     // receive-from-any queue, made on first use
  size_t rr = 0;                    // round-robin position among its incoming links
};

struct Direct::Link {
  ProcId from, to;
  Sender as;         // the sending process, recorded by daemon-side writes
  uid_t to_uid = 0;  // the receiver's real uid: its user may inspect the link
  std::shared_ptr<Mailbox> box;
  std::unique_ptr<Handle> watch;  // read-only handle whose poll token tells pid/any of arrivals
  bool orphan = false;            // its sender exited; kept until drained
  // The mailbox keeps a pointer to a handle with an armed poll token until
  // release(). Destroyed with Direct::mu_ released (release() may notify).
  ~Link() {
    if (box && watch) box->release(*watch);
  }
};

// Feeds a receiver's any-queue from its links.
class Direct::Feed final : public Feeder {
 public:
  Feed(Direct& d, ProcId me) : d_(d), me_(me) {}
  void feed(Mailbox& box) override { d_.feed(me_, box); }
  void waiting(Mailbox&, bool) override { d_.pull(me_); }

 private:
  Direct& d_;
  ProcId me_;
};

// Armed on a link's watch handle while its receiver waits on pid/any.
class Direct::LinkToken final : public PollToken {
 public:
  LinkToken(Direct& d, pid_t receiver) : d_(d), receiver_(receiver) {}
  void notify() override { d_.schedule(receiver_); }

 private:
  Direct& d_;
  pid_t receiver_;
};

Direct::Direct(MailboxFactory& factory) : factory_(factory), wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

Direct::~Direct() {
  if (thread_.joinable()) {
    stop_.store(true, std::memory_order_release);  // pairs with the acquire load in run()
    uint64_t one = 1;
    (void)!::write(wake_.get(), &one, sizeof one);
    thread_.join();
  }
  shutdown();
}

void Direct::start() {
  if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
}

void Direct::shutdown() {
  std::vector<std::shared_ptr<Mailbox>> boxes;
  std::vector<std::shared_ptr<Link>> dead;  // destroyed after the lock is released
  {
    Guard g(mu_);
    for (auto& l : links_) boxes.push_back(l->box);
    for (auto& [pid, p] : procs_)
      if (p->any) boxes.push_back(p->any);
    dead.swap(links_);
    procs_.clear();
  }
  for (auto& b : boxes) b->remove();
}

// ---- processes ---------------------------------------------------------------

// Registers process `pid` (a thread id counts as its process) with a pidfd,
// or finds it registered. A registered process with another start time is
// a dead one whose pid was reused: its links end first.
Result<ProcId> Direct::enroll(pid_t pid, Sender* who, uid_t* suid) {
  auto info = proc_info(pid);
  if (!info) return info.error();
  pid = info->tgid;
  if (who) *who = Sender{pid, info->ruid, info->rgid};
  if (suid) *suid = info->suid;
  auto start = proc_start(pid);
  if (!start) return start.error();
  const ProcId id{pid, *start};
  std::optional<ProcId> stale;
  {
    Guard g(mu_);
    auto it = procs_.find(pid);
    if (it != procs_.end()) {
      // Start times count clock ticks: a pid reused within the same tick
      // looks the same. The registered process's pidfd says whether it is
      // gone (the thread may not have seen its exit yet).
      pollfd p{it->second->pidfd->get(), POLLIN, 0};
      const bool gone = ::poll(&p, 1, 0) > 0;
      if (it->second->id == id && !gone) return id;
      stale = it->second->id;
    }
  }
  if (stale) exited(*stale);
  auto fd = std::make_shared<UniqueFd>(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!fd->valid()) return kNoProcess;
  // The pidfd names whatever had the pid when it was opened: the same start
  // time after opening proves it is the process we looked at.
  auto again = proc_start(pid);
  if (!again || *again != id.start) return kNoProcess;
  {
    Guard g(mu_);
    auto& slot = procs_[pid];
    if (slot && slot->id == id) return id;  // registered meanwhile by another thread
    if (slot) return kNoProcess;            // a newer process took the pid meanwhile
    slot = std::make_unique<Proc>();
    slot->id = id;
    slot->ruid = info->ruid;
    slot->suid = info->suid;
    slot->pidfd = std::move(fd);
  }
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);  // the thread polls the new pidfd
  return id;
}

Result<ProcId> Direct::enroll_caller(const Sender& caller) { return enroll(caller.pid); }

// Process `p` exited: links to it are discarded (their messages counted),
// links from it keep their messages for their receivers but nobody will wait
// on them any more.
void Direct::exited(const ProcId& p) {
  std::vector<std::shared_ptr<Mailbox>> drop, hang;
  std::vector<std::shared_ptr<Link>> dead;  // destroyed after the lock is released
  {
    Guard g(mu_);
    auto it = procs_.find(p.pid);
    if (it != procs_.end() && it->second->id == p) {
      if (it->second->any) drop.push_back(it->second->any);
      procs_.erase(it);
    }
    for (auto l = links_.begin(); l != links_.end();) {
      if ((*l)->to == p) {
        drop.push_back((*l)->box);
        dead.push_back(std::move(*l));
        l = links_.erase(l);
        continue;
      }
      if ((*l)->from == p && !(*l)->orphan) {
        (*l)->orphan = true;
        hang.push_back((*l)->box);
      }
      ++l;
    }
  }
  for (auto& b : drop) {
    discarded_.fetch_add(b->info().seg.count, std::memory_order_relaxed);
    b->remove(kNoProcess);  // blocked senders to the dead process: ESRCH
  }
  for (auto& b : hang) b->hang_up(kNoProcess);  // blocked receive(p): ESRCH
  sweep();
}

// Drops orphaned links that have been drained.
void Direct::sweep() {
  std::vector<std::shared_ptr<Mailbox>> gone;
  std::vector<std::shared_ptr<Link>> dead;  // destroyed after the lock is released
  {
    Guard g(mu_);
    for (auto l = links_.begin(); l != links_.end();) {
      if ((*l)->orphan && (*l)->box->info().seg.count == 0) {
        gone.push_back((*l)->box);
        dead.push_back(std::move(*l));
        l = links_.erase(l);
      } else {
        ++l;
      }
    }
  }
  for (auto& b : gone) b->remove(kNoProcess);  // library receivers sleeping on it wake (EIDRM)
}

// ---- links -------------------------------------------------------------------

Result<std::shared_ptr<Mailbox>> Direct::link_locked(const ProcId& from, const ProcId& to, const Sender& as,
                                                     uid_t to_uid, bool* made) {
  *made = false;
  for (auto& l : links_)
    if (!l->orphan && l->from == from && l->to == to) return l->box;
  // Both ends must still be enrolled: exited() scans the links under this same
  // lock, so a link made after an end's exit was handled would never be dropped.
  for (const ProcId* p : {&from, &to}) {
    auto it = procs_.find(p->pid);
    if (it == procs_.end() || !(it->second->id == *p)) return kNoProcess;
  }
  // Ids of their own, far from the tree's inode numbers: they name segment files.
  auto box = factory_.create_mailbox((1ull << 63) + next_id_++, factory_.defaults());
  if (!box) return box.error();
  auto l = std::make_shared<Link>();
  l->from = from;
  l->to = to;
  l->as = as;
  l->to_uid = to_uid;
  l->box = std::move(box.value());
  l->watch = l->box->open(true, false, true);
  links_.push_back(l);
  *made = true;
  return l->box;
}

std::vector<std::shared_ptr<Direct::Link>> Direct::incoming_locked(const ProcId& to) {
  std::vector<std::shared_ptr<Link>> v;
  for (auto& l : links_)
    if (l->to == to) v.push_back(l);
  return v;
}

Result<std::shared_ptr<Mailbox>> Direct::send_link(const Sender& caller, pid_t to) {
  auto me = enroll_caller(caller);
  if (!me) return me.error();
  Sender who;
  uid_t suid = 0;
  auto peer = enroll(to, &who, &suid);
  if (!peer) return peer.error();
  // kill(2)'s rule: root, or the same user as the receiver's real or saved uid.
  if (caller.uid != 0 && caller.uid != who.uid && caller.uid != suid) return Errc::perm;
  bool made;
  Result<std::shared_ptr<Mailbox>> box = Errc::io;
  {
    Guard g(mu_);
    box = link_locked(*me, *peer, Sender{me->pid, caller.uid, caller.gid}, who.uid, &made);
  }
  if (made) schedule(peer->pid);  // a receiver waiting on pid/any watches the new link too
  return box;
}

Result<std::shared_ptr<Mailbox>> Direct::recv_link(pid_t from, const Sender& caller) {
  auto me = enroll_caller(caller);
  if (!me) return me.error();
  Sender who;
  auto peer = enroll(from, &who);
  bool made = false;
  std::shared_ptr<Mailbox> box;
  {
    Guard g(mu_);
    if (peer) {
      auto b = link_locked(*peer, *me, who, caller.uid, &made);
      if (!b) return b.error();
      box = std::move(b.value());
    } else {
      // The sender is gone (its exit may not be handled yet); what it sent
      // before exiting is still here.
      for (auto& l : links_)
        if (l->from.pid == from && l->to == *me) box = l->box;
      if (!box) return kNoProcess;
    }
  }
  if (made) schedule(me->pid);
  return box;
}

Result<std::shared_ptr<Mailbox>> Direct::any_box(const Sender& caller) {
  auto me = enroll_caller(caller);
  if (!me) return me.error();
  Guard g(mu_);
  auto it = procs_.find(me->pid);
  if (it == procs_.end() || !(it->second->id == *me)) return kNoProcess;
  if (!it->second->any) {
    Settings s = factory_.defaults();
    s.capacity = layout::kUnbounded;  // only holds what its receivers asked for
    auto box = factory_.create_mailbox((1ull << 63) + next_id_++, s);
    if (!box) return box.error();
    (*box)->set_feeder(std::make_shared<Feed>(*this, *me));
    it->second->any = std::move(box.value());
  }
  return it->second->any;
}

uint64_t Direct::links() {
  Guard g(mu_);
  return links_.size();
}

// ---- receive from any ----------------------------------------------------------

// Moves the next message of one of `me`'s links (round robin across links,
// FIFO within each) into its any-queue. False if none is waiting.
bool Direct::move_one(const ProcId& me, Mailbox& any) {
  std::vector<std::shared_ptr<Link>> in;
  size_t rr = 0;
  {
    Guard g(mu_);
    in = incoming_locked(me);
    auto it = procs_.find(me.pid);
    if (it != procs_.end()) rr = it->second->rr;
  }
  for (size_t i = 0; i < in.size(); i++) {
    auto& l = in[(rr + i) % in.size()];
    auto o = l->box->take_message();
    if (!o) continue;
    if (any.inject(o->data, o->from) != Errc::ok) return false;  // the receiver exited meanwhile
    Guard g(mu_);
    auto it = procs_.find(me.pid);
    if (it != procs_.end()) it->second->rr = rr + i + 1;
    return true;
  }
  return false;
}

// Before a receive from any: an empty queue takes one message from a link.
void Direct::feed(const ProcId& me, Mailbox& any) {
  if (any.info().seg.count == 0) move_one(me, any);
}

// Receivers (or a poller) wait on the any-queue: move one message per waiter;
// if the links run dry, arm their poll tokens so that the next arrival
// brings us back (schedule(), on the thread).
void Direct::pull(const ProcId& me) {
  std::shared_ptr<Mailbox> any;
  {
    Guard g(mu_);
    auto it = procs_.find(me.pid);
    if (it == procs_.end() || !(it->second->id == me) || !it->second->any) return;
    any = it->second->any;
  }
  for (int round = 0; round < 64; round++) {
    MailboxInfo i = any->info();
    if (i.removed) return;
    // Parked readers get one message each, moved now. An armed poll does not:
    // a message moved ahead for a poller that has already read and closed its
    // file (its release comes later) would be stranded in the any-queue,
    // behind the later messages of the same link that the receiver then takes
    // from the link itself. A poller is told to look again instead, and its
    // poll moves one message (feed()) only when it does.
    const uint64_t want = i.blocked_receivers.size();
    uint64_t have = i.seg.count;
    while (have < want && move_one(me, *any)) have++;
    const bool pollers = i.armed_polls > 0 && have == 0;
    if (have >= want && !pollers) return;
    std::vector<std::shared_ptr<Link>> in;
    {
      Guard g(mu_);
      in = incoming_locked(me);
    }
    bool ready = false;  // a link became readable before its token was armed
    for (auto& l : in)
      if (l->box->poll(*l->watch, std::make_unique<LinkToken>(*this, me.pid)) & POLLIN) ready = true;
    if (!ready) return;
    if (have >= want) {  // only pollers wait
      any->notify_polls();
      return;
    }
  }
}

void Direct::schedule(pid_t receiver) {
  {
    Guard g(pending_mu_);
    pending_.insert(receiver);
  }
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
}

// The thread: waits on every registered pidfd and on the eventfd; handles
// exits, feeds receivers whose links changed, and drops drained orphans.
void Direct::run() {
  // pairs with the release store in ~Direct
  while (!stop_.load(std::memory_order_acquire)) {
    std::vector<pollfd> fds{{wake_.get(), POLLIN, 0}};
    std::vector<std::pair<ProcId, std::shared_ptr<UniqueFd>>> who;
    bool orphans = false;
    {
      Guard g(mu_);
      for (auto& [pid, p] : procs_) {
        fds.push_back({p->pidfd->get(), POLLIN, 0});
        who.emplace_back(p->id, p->pidfd);
      }
      for (auto& l : links_) orphans = orphans || l->orphan;
    }
    // Orphans drained by a library receiver tell nobody: look again now and then.
    ::poll(fds.data(), fds.size(), orphans ? 200 : -1);
    if (fds[0].revents & POLLIN) {
      uint64_t n;
      (void)!::read(wake_.get(), &n, sizeof n);
    }
    for (size_t i = 1; i < fds.size(); i++)
      if (fds[i].revents) exited(who[i - 1].first);
    std::set<pid_t> todo;
    {
      Guard g(pending_mu_);
      todo.swap(pending_);
    }
    for (pid_t r : todo) {
      std::optional<ProcId> me;
      {
        Guard g(mu_);
        auto it = procs_.find(r);
        if (it != procs_.end()) me = it->second->id;
      }
      if (me) pull(*me);
    }
    if (orphans) sweep();
  }
}

// ---- what pid/ shows ------------------------------------------------------------

std::vector<Direct::LinkInfo> Direct::link_infos() {
  Guard g(mu_);
  std::vector<LinkInfo> out;
  out.reserve(links_.size());
  for (auto& l : links_) out.push_back({l->from.pid, l->to.pid, l->to_uid, l->as, l->orphan, l->box});
  return out;
}

std::shared_ptr<Mailbox> Direct::any_queue(pid_t self) {
  Guard g(mu_);
  auto it = procs_.find(self);
  return it == procs_.end() ? nullptr : it->second->any;
}

}  // namespace mbx
