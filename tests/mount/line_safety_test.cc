// Line framing returns one line per read(2), so the tools that read ahead and
// stop early (head, sed q, buffered readers) take exactly the one message they
// use; batching several lines per read is the opt-in framing line_batch.
#include <gtest/gtest.h>

#include "harness.h"

namespace {

using mt::Mount;
using mt::Proc;

// Three messages in one write(2), so that no shell buffering decides how they arrive.
constexpr const char* kThree =
    "touch box; setfattr -n user.mailbox.framing -v line box;"
    "python3 -c \"import os; os.write(os.open('box', os.O_WRONLY), b'one\\ntwo\\nthree\\n')\";";

struct Tool {
  const char* name;
  const char* script;  // receives one line from box and prints it
};

void PrintTo(const Tool& t, std::ostream* os) { *os << t.name; }

class LineTools : public ::testing::TestWithParam<Tool> {};

TEST_P(LineTools, TakesExactlyOneMessage) {
  Mount m;
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  ASSERT_EQ(m.sh(kThree).status, 0);
  ASSERT_EQ(m.xattr("box", "messages"), "3");
  auto r = m.sh(GetParam().script);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "one\n") << r.err;
  EXPECT_EQ(m.xattr("box", "messages"), "2");  // the other two are still queued
  EXPECT_EQ(m.xattr("box", "received"), "1");
  // And the next reader gets the next line.
  r = m.sh(GetParam().script);
  EXPECT_EQ(r.out, "two\n") << r.err;
  EXPECT_EQ(m.xattr("box", "messages"), "1");
}

INSTANTIATE_TEST_SUITE_P(
    Tools, LineTools,
    ::testing::Values(Tool{"head", "head -n 1 box"}, Tool{"sed", "sed q box"},
                      Tool{"python_readline", "python3 -c \"print(open('box').readline(), end='')\""},
                      Tool{"bash_read", "read -r x < box && echo \"$x\""}, Tool{"head_stdin", "head -n 1 < box"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(LineSafety, AReadWithARoomyBufferReturnsOneLine) {
  Mount m;
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  ASSERT_EQ(m.sh(kThree).status, 0);
  auto r =
      m.sh("python3 -c \"import os; f = os.open('box', os.O_RDONLY); print(os.read(f, 65536), os.read(f, 65536))\"");
  EXPECT_EQ(r.out, "b'one\\n' b'two\\n'\n") << r.err;
  EXPECT_EQ(m.xattr("box", "messages"), "1");
}

TEST(LineSafety, ALineLongerThanTheBufferComesInPartsAndTheNextStays) {
  Mount m;
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  ASSERT_EQ(m.sh(kThree).status, 0);
  auto r = m.sh("python3 -c \"import os; f = os.open('box', os.O_RDONLY); print(os.read(f, 2), os.read(f, 100))\"");
  EXPECT_EQ(r.out, "b'on' b'e\\n'\n") << r.err;
  EXPECT_EQ(m.xattr("box", "messages"), "2");
}

TEST(LineSafety, AParkedHeadTakesOneOfSeveralLinesSentInOneWrite) {
  Mount m;
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  ASSERT_EQ(m.sh("touch box; setfattr -n user.mailbox.framing -v line box").status, 0);
  Proc head("head -n 1 box", m.dir());
  ASSERT_TRUE(m.wait_words("box", "blocked_receivers", 1, 10000));
  ASSERT_EQ(m.sh("python3 -c \"import os; os.write(os.open('box', os.O_WRONLY), b'x\\ny\\nz\\n')\"").status, 0);
  mt::Run r = head.finish(10000);
  EXPECT_EQ(r.out, "x\n") << r.err;
  EXPECT_EQ(m.xattr("box", "messages"), "2");
}

TEST(LineSafety, ShellToolsDrainTheMailboxInOrder) {
  Mount m("framing=line");
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  auto r = m.sh(
      "touch box; for i in 1 2 3 4 5; do echo l$i > box; done;"
      "head -n1 box; sed q box; read -r x < box; echo $x;"
      "python3 -c \"import sys; print(open('box').readline(), end='')\"; head -c 3 box; echo;"
      "getfattr --only-values -n user.mailbox.messages box");
  EXPECT_EQ(r.out, "l1\nl2\nl3\nl4\nl5\n\n0") << r.err;
}

// The opt-in: a read returns as many whole lines as fit, with the hazard that
// a reader stopping early takes the lines it did not use.
TEST(LineSafety, LineBatchIsOptInAndBatchesReads) {
  Mount m;
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  auto r = m.sh(
      "touch box; setfattr -n user.mailbox.framing -v line_batch box;"
      "getfattr --only-values -n user.mailbox.framing box; echo;"
      "printf 'a\\nb\\nc\\n' > box;"
      "python3 -c \"import os; f = os.open('box', os.O_RDONLY); print(os.read(f, 100))\";"
      "getfattr --only-values -n user.mailbox.messages box");
  EXPECT_EQ(r.out, "line_batch\nb'a\\nb\\nc\\n'\n0") << r.err;
}

TEST(LineSafety, LineBatchAsTheMountDefault) {
  Mount m("framing=line_batch");
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  auto r = m.sh(
      "touch box; getfattr --only-values -n user.mailbox.framing box; echo;"
      "python3 -c \"import os; os.write(os.open('box', os.O_WRONLY), b'1\\n2\\n')\";"
      "head -n 1 box; getfattr --only-values -n user.mailbox.messages box");
  EXPECT_EQ(r.out, "line_batch\n1\n0") << r.err;  // the documented hazard: head took both
}

}  // namespace
