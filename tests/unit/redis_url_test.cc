// SPDX-License-Identifier: MIT
// -o backend=...: the two URL forms, and what is refused.
#include <gtest/gtest.h>

#include "redis/url.h"

namespace {
using mbx::Errc;
using mbx::redis::parse_url;

TEST(RedisUrl, TcpForms) {
  auto a = parse_url("redis://localhost");
  ASSERT_TRUE(a.ok());
  EXPECT_FALSE(a->unix_socket);
  EXPECT_EQ(a->host, "localhost");
  EXPECT_EQ(a->port, 6379);
  EXPECT_EQ(a->db, 0);
  auto b = parse_url("redis://10.0.0.7:7000/3");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->host, "10.0.0.7");
  EXPECT_EQ(b->port, 7000);
  EXPECT_EQ(b->db, 3);
  auto c = parse_url("redis://[::1]:6380/");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->host, "::1");
  EXPECT_EQ(c->port, 6380);
  EXPECT_EQ(c->text(), "redis://[::1]:6380/0");
  auto d = parse_url("redis://[fe80::1]");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->port, 6379);
}

TEST(RedisUrl, UnixForms) {
  auto a = parse_url("redis+unix:///run/redis/redis.sock");
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->unix_socket);
  EXPECT_EQ(a->path, "/run/redis/redis.sock");
  EXPECT_EQ(a->db, 0);
  auto b = parse_url("redis+unix:///tmp/s?db=2");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->path, "/tmp/s");
  EXPECT_EQ(b->db, 2);
  EXPECT_EQ(b->text(), "redis+unix:///tmp/s?db=2");
}

TEST(RedisUrl, Refused) {
  for (const char* bad : {"",
                          "localhost",
                          "http://x",
                          "redis://",
                          "redis://:6379",
                          "redis://h:",
                          "redis://h:0",
                          "redis://h:65536",
                          "redis://h:12x",
                          "redis://h/x",
                          "redis://h/-1",
                          "redis://h/70000",
                          "redis://[::1",
                          "redis://[::1]x",
                          "redis://[::1]:",
                          "redis://user@h",
                          "redis+unix://",
                          "redis+unix://rel/path",
                          "redis+unix:///",
                          "redis+unix:///dir/",
                          "redis+unix:///s?db=",
                          "redis+unix:///s?x=1",
                          "redis://h\n",
                          "rediss://h"})
    EXPECT_EQ(parse_url(bad).error(), Errc::invalid) << bad;
}
}  // namespace
