// SPDX-License-Identifier: MIT
// Framing: file (open-write-close is one message), datagram (one write is one
// message), line (one line is one message); reads never drop a byte.
#include <gtest/gtest.h>

#include "harness.h"

namespace {

using mt::Mount;
using mt::Proc;

TEST(Framing, FileFsyncCommitsWhatWasWritten) {
  Mount m;
  ASSERT_TRUE(m.ok());
  auto r = m.sh(
      "touch box; python3 -c \"\n"
      "import os\n"
      "f = open('box', 'w')\n"
      "f.write('part one'); f.flush(); os.fsync(f.fileno())\n"
      "f.write('part two')\n"
      "f.close()\n\"; cat box; echo; cat box");
  EXPECT_EQ(r.out, "part one\npart two") << r.err;
}

TEST(Framing, BashReadOneByteAtATimeDropsNothing) {
  Mount m;
  ASSERT_TRUE(m.ok());
  auto r = m.sh(
      "printf 'first line\\nsecond line\\n' > box;"
      "{ read a; read b; echo \"$a|$b\"; } < box");
  EXPECT_EQ(r.out, "first line|second line\n") << r.err;
}

TEST(Framing, DatagramEachWriteIsOneMessage) {
  Mount m("framing=datagram");
  ASSERT_TRUE(m.ok());
  auto r = m.sh(
      "touch box; python3 -c \"\n"
      "import os\n"
      "w = os.open('box', os.O_WRONLY); r = os.open('box', os.O_RDONLY)\n"
      "for msg in (b'alpha', b'beta', b'gamma'): os.write(w, msg)\n"
      "print(os.read(r, 100), os.read(r, 2), os.read(r, 100), os.read(r, 3), os.read(r, 100))\n\"");
  EXPECT_EQ(r.out, "b'alpha' b'be' b'ta' b'gam' b'ma'\n") << r.err;
}

TEST(Framing, DatagramReadersNeverSeeEof) {
  Mount m("framing=datagram");
  ASSERT_TRUE(m.ok());
  m.sh("touch box");
  Proc reader("head -c 6 box", m.dir());  // two messages through one open
  m.sh("printf abc > box");
  ASSERT_TRUE(m.wait_listed("box", "blocked_receivers", reader.pid()));  // has abc, waits for more
  EXPECT_EQ(m.xattr("box", "messages"), "0");
  m.sh("printf def > box");
  EXPECT_TRUE(reader.exits());
  EXPECT_EQ(reader.finish().out, "abcdef");
}

TEST(Framing, DatagramTooLargeForOneRequestIsRefusedWhole) {
  Mount m("framing=datagram,max_message=4M");
  ASSERT_TRUE(m.ok());
  auto r = m.sh(
      "touch box; python3 -c \"\n"
      "import os, errno\n"
      "w = os.open('box', os.O_WRONLY)\n"
      "for n in (1044480, 1044481, 3 << 20):\n"
      "    try: print(n, os.write(w, b'x' * n))\n"
      "    except OSError as e: print(n, errno.errorcode[e.errno])\n\";"
      "getfattr --only-values -n user.mailbox.messages box");
  EXPECT_EQ(r.out, "1044480 1044480\n1044481 EMSGSIZE\n3145728 EMSGSIZE\n1") << r.err;
}

// cp writes in chunks: the chunk that makes the message too long fails, and
// nothing of the message may arrive, not even the chunks before it.
TEST(Framing, FileTooLargeWrittenInChunksSendsNothing) {
  Mount m("max_message=100000");
  ASSERT_TRUE(m.ok());
  auto r = m.sh(
      "touch box; head -c 100001 /dev/zero > ../big; head -c 100000 /dev/zero > ../fits;"
      "dd if=../big of=box bs=1000 status=none 2>/dev/null; echo dd=$?;"
      "getfattr --only-values -n user.mailbox.messages box; echo;"
      "dd if=../fits of=box bs=1000 status=none; echo dd=$?; cat box | wc -c");
  EXPECT_EQ(r.out, "dd=1\n0\ndd=0\n100000\n") << r.err;
}

TEST(Framing, LineEachLineIsOneMessage) {
  Mount m("framing=line");
  ASSERT_TRUE(m.ok());
  auto r = m.sh(
      "touch box; printf 'a\\nbb\\nccc\\n' > box; printf 'par' > box;"
      "getfattr --only-values -n user.mailbox.messages box; echo;"
      "python3 -c \"\n"
      "import os\n"
      "r = os.open('box', os.O_RDONLY)\n"
      "print(os.read(r, 1), os.read(r, 100))\n\"");
  // A read returns one line at most: the rest of a partly read line comes
  // alone. The unterminated 'par' was committed when its writer closed.
  EXPECT_EQ(r.out, "4\nb'a' b'\\n'\n") << r.err;
}

TEST(Framing, LineStreamsFromALongLivedWriter) {
  // Rendezvous: each write returns only once the reader has taken its line.
  Mount m("framing=line,capacity=0");
  ASSERT_TRUE(m.ok());
  m.sh("touch box");
  // One open file, three writes, each after the reader has taken the one before.
  Proc writer("for i in 1 2 3; do echo line$i; done > box", m.dir());
  Proc reader("head -n 3 box", m.dir());
  EXPECT_TRUE(writer.exits());
  EXPECT_TRUE(reader.exits());
  EXPECT_EQ(reader.finish().out, "line1\nline2\nline3\n");
}

TEST(Framing, BatchedReadsReturnWholeLinesWithoutSplittingTheNext) {
  Mount m("framing=line_batch");
  ASSERT_TRUE(m.ok());
  auto r = m.sh(
      "touch box; printf '12345\\n12345\\n12345\\n' > box; python3 -c \"\n"
      "import os\n"
      "r = os.open('box', os.O_RDONLY)\n"
      "print(os.read(r, 13), os.read(r, 100))\n\"");
  EXPECT_EQ(r.out, "b'12345\\n12345\\n' b'12345\\n'\n") << r.err;
}

TEST(Framing, FramingIsPerMailbox) {
  Mount m;
  ASSERT_TRUE(m.ok());
  // (bash's printf may write line by line: use one write(2) explicitly)
  auto r = m.sh(
      "touch f d; setfattr -n user.mailbox.framing -v datagram d;"
      "for b in f d; do python3 -c \"import os; os.write(os.open('$b', os.O_WRONLY), b'x\\ny\\n')\"; done;"
      "getfattr --only-values -n user.mailbox.messages f; getfattr --only-values -n user.mailbox.messages d");
  EXPECT_EQ(r.out, "11") << r.err;
}

}  // namespace
