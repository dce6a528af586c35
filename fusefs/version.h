// SPDX-License-Identifier: MIT
#define MAILBOXFS_VERSION "0.1.0"
