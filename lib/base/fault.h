// Survives a segment that loses its memory under the daemon. Segments are
// files in a shared tmpfs: a store into a page the filesystem cannot provide
// (it is full) or a load from beyond the end of a truncated file raises
// SIGBUS, which would end the daemon and every mailbox of the mount.
#pragma once
#include <string>

namespace mbx {

// Installs, for the whole process, a SIGBUS handler that maps a private
// zero page over the faulting page of a file under `state_dir` (so that the
// faulting instruction completes), marks that segment corrupt (its mailbox
// answers EBADMSG from then on, to every participant that still sees its
// header) and logs it to stderr. A fault anywhere else keeps the default
// action. Call once, before any segment is used.
void install_segment_fault_handler(const std::string& state_dir);

}  // namespace mbx
