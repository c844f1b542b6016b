/* A stand-in for a disk whose fsync costs milliseconds: an LD_PRELOAD shim
 * that waits SLOW_FSYNC_US microseconds (default 2600) before each real
 * fsync/fdatasync. Used only by benches/ingest.sh. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static void wait_like_a_slow_disk(void) {
  const char *text = getenv("SLOW_FSYNC_US");
  long us = text ? atol(text) : 2600;
  struct timespec pause = {us / 1000000, (us % 1000000) * 1000};
  nanosleep(&pause, NULL);
}

int fdatasync(int fd) {
  static int (*real)(int);
  if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
  wait_like_a_slow_disk();
  return real(fd);
}

int fsync(int fd) {
  static int (*real)(int);
  if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
  wait_like_a_slow_disk();
  return real(fd);
}
