/*
 * The system-call floor of a scan, for benchmarks/reaction.py: PIDs on stdin (one a line),
 * then for each of R repetitions prints two figures in ms:
 *   open  the cheapest possible scan: open + read + close of /proc/PID/<file> per process;
 *   pread pread of /proc/PID/<file> on fds opened beforehand and kept open (what is left
 *         when even the open is paid in advance: the kernel generating the file).
 * Usage: floor FILE REPETITIONS < pids
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    int reps = atoi(argv[2]), n = 0, cap = 1024;
    int *pids = malloc(sizeof(int) * cap);
    while (scanf("%d", &pids[n]) == 1)
        if (++n == cap) pids = realloc(pids, sizeof(int) * (cap *= 2));
    int *fds = malloc(sizeof(int) * (n ? n : 1));
    char path[64], buf[4096];
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "/proc/%d/%s", pids[i], argv[1]);
        fds[i] = open(path, O_RDONLY | O_CLOEXEC);
    }
    for (int r = 0; r < reps; r++) {
        double start = now_ms();
        for (int i = 0; i < n; i++) {
            snprintf(path, sizeof path, "/proc/%d/%s", pids[i], argv[1]);
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0) continue;
            if (read(fd, buf, sizeof buf) < 0) buf[0] = 0;
            close(fd);
        }
        double opened = now_ms() - start;
        start = now_ms();
        for (int i = 0; i < n; i++)
            if (fds[i] >= 0 && pread(fds[i], buf, sizeof buf, 0) < 0) buf[0] = 0;
        printf("%.4f %.4f\n", opened, now_ms() - start);
    }
    return 0;
}
