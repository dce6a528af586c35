// SPDX-License-Identifier: MIT
// The bounded-buffer producer-consumer of the IPC lecture notes, as two
// processes sharing one mailboxfs mailbox through libmailbox.
//
//   g++ -std=c++20 producer_consumer.cpp $(pkg-config --cflags --libs mailbox) -o producer_consumer
//   ./producer_consumer /mnt/mbx/buffer [items] [capacity]
//
// The mailbox is the bounded buffer: the producer blocks while it is full,
// the consumer while it is empty, and the shell can watch it meanwhile
// (ls -l /mnt/mbx/buffer; getfattr -d -m - /mnt/mbx/buffer).
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <mailbox/mailbox.hpp>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MAILBOX-PATH [items] [capacity]\n", argv[0]);
    return 2;
  }
  const std::string path = argv[1];
  const long items = argc > 2 ? std::atol(argv[2]) : 100000;
  mailbox::CreateOptions opts;
  opts.capacity = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 8;  // the buffer's size
  opts.max_message = 64;
  auto created = mailbox::Mailbox::create(path, opts);
  if (!created) {
    std::fprintf(stderr, "%s: %s\n", path.c_str(), std::strerror(created.error()));
    return 1;
  }

  pid_t consumer = fork();
  if (consumer == 0) {
    auto box = mailbox::Mailbox::open(path, {.send = false, .receive = true});
    if (!box) return 1;
    long long sum = 0;
    std::string item;
    for (long i = 0; i < items; i++) {
      if (int e = box->receive(item)) {  // blocks while the buffer is empty
        std::fprintf(stderr, "consumer: %s\n", std::strerror(e));
        return 1;
      }
      sum += std::atoll(item.c_str());
    }
    std::printf("consumer: received %ld items, sum %lld\n", items, sum);
    return 0;
  }

  auto box = mailbox::Mailbox::open(path, {.send = true, .receive = false});
  if (!box) return 1;
  long long sum = 0;
  for (long i = 1; i <= items; i++) {
    if (int e = box->send(std::to_string(i))) {  // blocks while the buffer is full
      std::fprintf(stderr, "producer: %s\n", std::strerror(e));
      return 1;
    }
    sum += i;
  }
  std::printf("producer: sent %ld items, sum %lld\n", items, sum);
  int status = 0;
  waitpid(consumer, &status, 0);
  unlink(path.c_str());
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
