// SPDX-License-Identifier: MIT
// The kernel ABI of FUSE over io_uring, declared here because Debian's
// linux-libc-dev (FUSE 7.38, io_uring of Linux 6.1) predates it.
// Source: include/uapi/linux/fuse.h of Linux 6.14+ (protocol 7.42, "add
// FUSE_OVER_IO_URING and all other io-uring related flags and data") and
// fs/fuse/dev_uring.c (how REGISTER and COMMIT_AND_FETCH are handled), read
// in December 2026 against the running 6.18 kernel.
#pragma once

#include <linux/fuse.h>
#include <linux/io_uring.h>

#include <cstddef>
#include <cstdint>

namespace uring_abi {

// INIT flag bit 41, i.e. bit 9 of fuse_init_in/out.flags2 (needs FUSE_INIT_EXT).
inline constexpr uint64_t kOverIoUring = 1ULL << 41;
inline constexpr uint32_t kInitExt = 1U << 30;  // FUSE_INIT_EXT

inline constexpr uint32_t kCmdRegister = 1;        // FUSE_IO_URING_CMD_REGISTER
inline constexpr uint32_t kCmdCommitAndFetch = 2;  // FUSE_IO_URING_CMD_COMMIT_AND_FETCH

inline constexpr std::size_t kInOutHeaderSize = 128;  // FUSE_URING_IN_OUT_HEADER_SZ
inline constexpr std::size_t kOpInOutSize = 128;      // FUSE_URING_OP_IN_OUT_SZ

// struct fuse_uring_ent_in_out: the kernel fills commit_id and payload_sz on a
// fetch; the server sets payload_sz to its reply's length on a commit.
struct EntInOut {
  uint64_t flags;
  uint64_t commit_id;
  uint32_t payload_sz;
  uint32_t padding;
  uint64_t reserved;
};

// struct fuse_uring_req_header: iov[0] of a registered entry.
struct ReqHeader {
  char in_out[kInOutHeaderSize];  // fuse_in_header on fetch, fuse_out_header on commit
  char op_in[kOpInOutSize];       // the opcode's first argument (fuse_write_in, ...)
  EntInOut ring_ent_in_out;
};

// struct fuse_uring_cmd_req: in the 80-byte command area of a 128-byte SQE.
struct CmdReq {
  uint64_t flags;
  uint64_t commit_id;  // fuse_in_header.unique of the request being answered
  uint16_t qid;        // queue index = CPU number
  uint8_t padding[6];
};

static_assert(sizeof(EntInOut) == 32);
static_assert(sizeof(ReqHeader) == 288);
static_assert(sizeof(CmdReq) == 24);
static_assert(sizeof(CmdReq) <= 80, "fits the SQE128 command area");
static_assert(sizeof(fuse_in_header) <= kInOutHeaderSize && sizeof(fuse_out_header) <= kInOutHeaderSize);
static_assert(sizeof(fuse_init_out) == 64);

}  // namespace uring_abi
