// SPDX-License-Identifier: MIT
// What the daemon keeps beside the segments so that a daemon restarted after
// a crash finds the namespace again: one small text file per directory and
// mailbox ("n<ino>" in the state directory), rewritten (write, then rename)
// whenever its name, place, owner, mode or settings change, and removed with
// it. A clean unmount removes the whole state directory.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "base/errc.h"
#include "core/settings.h"

namespace mbx {

struct NodeMeta {
  uint64_t ino = 0;
  uint64_t parent = 0;
  mode_t mode = 0;  // with S_IFDIR / S_IFREG
  uid_t uid = 0;
  gid_t gid = 0;
  Settings settings;  // mailboxes only
  std::string name;
};

Errc save_meta(const std::string& dir, const NodeMeta& m);
void remove_meta(const std::string& dir, uint64_t ino);
// Every well-formed record in `dir`; the names of malformed ones go to `bad`.
std::vector<NodeMeta> load_meta(const std::string& dir, std::vector<std::string>* bad);

}  // namespace mbx
