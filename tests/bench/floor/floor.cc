// SPDX-License-Identifier: MIT
// bench-floor: the least a low-level FUSE message queue can do, so `make
// bench` can show what FUSE itself costs and what mailboxfs adds above it.
// Each regular file is an in-memory queue of at most kCapacity datagrams:
// a write() is one message, a read() returns one. Files are direct_io and
// nonseekable; a read on an empty queue and a write to a full one keep their
// fuse_req_t and are answered by whichever request makes them ready, so no
// worker thread ever waits. No permissions, no xattrs, no persistence.
// Usage: bench-floor MOUNTPOINT (stays in the foreground; SIGTERM unmounts).
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace {

constexpr size_t kCapacity = 64;  // the mailboxfs default capacity

struct ParkedWrite {
  fuse_req_t req;
  std::string msg;
};
struct ParkedRead {
  fuse_req_t req;
  size_t size;
};

struct Queue {
  std::deque<std::string> msgs;
  std::deque<ParkedRead> readers;
  std::deque<ParkedWrite> writers;
};

// One lock for the whole filesystem: the floor is meant to be minimal, and
// the benchmark uses few queues at a time.
struct Floor {
  std::mutex m;
  std::map<std::string, fuse_ino_t> names;              // GUARDED_BY(m)
  std::map<fuse_ino_t, std::unique_ptr<Queue>> queues;  // GUARDED_BY(m)
  fuse_ino_t next_ino = 2;                              // GUARDED_BY(m)
};

Floor& floor_of(fuse_req_t req) { return *static_cast<Floor*>(fuse_req_userdata(req)); }

// Replies gathered under the lock and sent after it is released.
using Replies = std::vector<std::function<void()>>;
void send_all(Replies& r) {
  for (auto& f : r) f();
}

struct stat attr_of(fuse_ino_t ino) {
  struct stat st {};
  st.st_ino = ino;
  st.st_mode = ino == FUSE_ROOT_ID ? S_IFDIR | 0777 : S_IFREG | 0666;
  st.st_nlink = ino == FUSE_ROOT_ID ? 2 : 1;
  return st;
}

void reply_entry(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  fuse_entry_param e{};
  e.ino = ino;
  e.attr = attr_of(ino);
  e.attr_timeout = e.entry_timeout = 1.0;
  if (fi) fuse_reply_create(req, &e, fi);
  else fuse_reply_entry(req, &e);
}

void fl_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Floor& f = floor_of(req);
  fuse_ino_t ino = 0;
  {
    std::lock_guard lk(f.m);
    if (auto it = f.names.find(name); parent == FUSE_ROOT_ID && it != f.names.end()) ino = it->second;
  }
  if (!ino) return (void)fuse_reply_err(req, ENOENT);
  reply_entry(req, ino, nullptr);
}

void fl_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  struct stat st = attr_of(ino);
  fuse_reply_attr(req, &st, 1.0);
}

void pipe_like(fuse_file_info* fi) {
  fi->direct_io = 1;
  fi->nonseekable = 1;
}

void fl_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t, fuse_file_info* fi) {
  if (parent != FUSE_ROOT_ID) return (void)fuse_reply_err(req, ENOENT);
  Floor& f = floor_of(req);
  fuse_ino_t ino;
  {
    std::lock_guard lk(f.m);
    if (f.names.count(name)) return (void)fuse_reply_err(req, EEXIST);
    ino = f.next_ino++;
    f.names[name] = ino;
    f.queues[ino] = std::make_unique<Queue>();
  }
  pipe_like(fi);
  reply_entry(req, ino, fi);
}

void fl_open(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  pipe_like(fi);
  fuse_reply_open(req, fi);
}

// Unlinking fails every parked request on the queue, as a deleted mailbox does.
void fl_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Floor& f = floor_of(req);
  std::unique_ptr<Queue> gone;
  {
    std::lock_guard lk(f.m);
    auto it = f.names.find(name);
    if (parent != FUSE_ROOT_ID || it == f.names.end()) return (void)fuse_reply_err(req, ENOENT);
    gone = std::move(f.queues[it->second]);
    f.queues.erase(it->second);
    f.names.erase(it);
  }
  for (auto& r : gone->readers) fuse_reply_err(r.req, EIDRM);
  for (auto& w : gone->writers) fuse_reply_err(w.req, EIDRM);
  fuse_reply_err(req, 0);
}

// A signal to a parked caller: drop its request and fail it with EINTR, so
// nothing is later handed to a process that has gone.
void fl_interrupt(fuse_req_t req, void* data) {
  Floor& f = *static_cast<Floor*>(data);
  bool found = false;
  {
    std::lock_guard lk(f.m);
    for (auto& [ino, q] : f.queues) {
      std::erase_if(q->readers, [&](const ParkedRead& r) { return r.req == req && (found = true); });
      std::erase_if(q->writers, [&](const ParkedWrite& w) { return w.req == req && (found = true); });
    }
  }
  if (found) fuse_reply_err(req, EINTR);
}

Queue* queue_locked(Floor& f, fuse_ino_t ino) {
  auto it = f.queues.find(ino);
  return it == f.queues.end() ? nullptr : it->second.get();
}

void fl_write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t, fuse_file_info*) {
  Floor& f = floor_of(req);
  Replies replies;
  // Registered before the request can be parked: an interrupt that came
  // earlier is seen by fuse_req_interrupted() under the lock.
  fuse_req_interrupt_func(req, fl_interrupt, &f);
  {
    std::lock_guard lk(f.m);
    Queue* q = queue_locked(f, ino);
    if (!q) return (void)fuse_reply_err(req, EIDRM);
    if (!q->readers.empty()) {  // hand the message straight to a parked reader
      ParkedRead r = q->readers.front();
      q->readers.pop_front();
      std::string msg(buf, size < r.size ? size : r.size);
      replies.push_back([r, msg = std::move(msg)] { fuse_reply_buf(r.req, msg.data(), msg.size()); });
    } else if (q->msgs.size() >= kCapacity) {
      if (fuse_req_interrupted(req)) return (void)fuse_reply_err(req, EINTR);
      q->writers.push_back({req, std::string(buf, size)});
      return;  // answered by the read that makes room
    } else {
      q->msgs.emplace_back(buf, size);
    }
  }
  send_all(replies);
  fuse_reply_write(req, size);
}

void fl_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t, fuse_file_info*) {
  Floor& f = floor_of(req);
  std::string msg;
  Replies replies;
  fuse_req_interrupt_func(req, fl_interrupt, &f);
  {
    std::lock_guard lk(f.m);
    Queue* q = queue_locked(f, ino);
    if (!q) return (void)fuse_reply_err(req, EIDRM);
    if (q->msgs.empty()) {
      if (fuse_req_interrupted(req)) return (void)fuse_reply_err(req, EINTR);
      q->readers.push_back({req, size});
      return;  // answered by the next write
    }
    msg = std::move(q->msgs.front());
    q->msgs.pop_front();
    if (msg.size() > size) msg.resize(size);
    if (!q->writers.empty()) {  // the room just made admits a parked writer
      ParkedWrite w = std::move(q->writers.front());
      q->writers.pop_front();
      const size_t n = w.msg.size();
      q->msgs.push_back(std::move(w.msg));
      replies.push_back([r = w.req, n] { fuse_reply_write(r, n); });
    }
  }
  fuse_reply_buf(req, msg.data(), msg.size());
  send_all(replies);
}

const fuse_lowlevel_ops kOps = [] {
  fuse_lowlevel_ops o{};
  o.lookup = fl_lookup;
  o.getattr = fl_getattr;
  o.create = fl_create;
  o.open = fl_open;
  o.unlink = fl_unlink;
  o.read = fl_read;
  o.write = fl_write;
  return o;
}();

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s MOUNTPOINT\n", argv[0]);
    return 2;
  }
  Floor floor;
  char* fargv[] = {argv[0], const_cast<char*>("-ofsname=bench-floor,subtype=floor"), nullptr};
  fuse_args args = FUSE_ARGS_INIT(2, fargv);
  fuse_session* se = fuse_session_new(&args, &kOps, sizeof kOps, &floor);
  if (!se) return 2;
  int status = 1;
  if (fuse_set_signal_handlers(se) == 0) {
    if (fuse_session_mount(se, argv[1]) == 0) {
      fuse_loop_config* lc = fuse_loop_cfg_create();
      const int rc = fuse_session_loop_mt(se, lc);
      fuse_loop_cfg_destroy(lc);
      fuse_session_unmount(se);
      status = rc < 0 ? 1 : 0;
    }
    fuse_remove_signal_handlers(se);
  }
  fuse_session_destroy(se);
  return status;
}
