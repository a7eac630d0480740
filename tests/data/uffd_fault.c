/*
 * A process with one thread blocked in a userfaultfd fault that nobody serves, and another
 * thread mapping and unmapping in a loop (it needs the mmap_lock for writing). Mode "argv"
 * instead empties the page holding argv's strings and leaves its faults to the userfaultfd.
 * tests/test_scan_cmdline.py reads /proc/PID/cmdline of it: on 6.x neither blocks the
 * reader (handle_userfault drops the lock before waiting; remote reads do not wait).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
static char *region;
static void *toucher(void *arg) { volatile char c = region[0]; (void)c; return NULL; }
static void *mapper(void *arg) { for (;;) { void *p = mmap(0, 4096, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0); munmap(p, 4096); usleep(1000);} return NULL; }
int main(int argc, char **argv) {
    long page = sysconf(_SC_PAGESIZE);
    int uffd = syscall(SYS_userfaultfd, O_CLOEXEC);
    if (uffd < 0) { perror("userfaultfd"); return 1; }
    struct uffdio_api api = {.api = UFFD_API};
    if (ioctl(uffd, UFFDIO_API, &api)) { perror("api"); return 1; }
    const char *mode = argc > 1 ? argv[1] : "fault";
    unsigned long start;
    if (strcmp(mode, "argv") == 0) {
        /* the page holding argv's strings: empty it and let uffd own its faults */
        FILE *f = fopen("/proc/self/stat", "r"); char buf[4096]; fread(buf, 1, sizeof buf, f); fclose(f);
        char *p = strrchr(buf, ')') + 2; unsigned long arg_start = 0; int field = 3;
        for (char *tok = strtok(p, " "); tok; tok = strtok(NULL, " "), field++) if (field == 48) { arg_start = strtoul(tok, 0, 10); break; }
        start = arg_start & ~(page - 1);
        printf("%d argv page %lx\n", getpid(), start); fflush(stdout);
        madvise((void *)start, page, MADV_DONTNEED);
    } else {
        region = mmap(0, page, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0);
        start = (unsigned long)region;
    }
    struct uffdio_register reg = {.range = {.start = start, .len = page}, .mode = UFFDIO_REGISTER_MODE_MISSING};
    if (ioctl(uffd, UFFDIO_REGISTER, &reg)) { perror("register"); return 1; }
    if (strcmp(mode, "fault") == 0) {
        pthread_t a, b; pthread_create(&a, 0, toucher, 0); usleep(100000); pthread_create(&b, 0, mapper, 0);
        printf("%d faulting thread blocked, mapper thread running\n", getpid()); fflush(stdout);
    }
    pause();
}
