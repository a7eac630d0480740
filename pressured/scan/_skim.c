/*
 * pressured.scan._skim: the skim loop without the interpreter in between.
 *
 * skim(proc_root, pids, which, page_size, deadline_ns) reads one small procfs file per PID
 * (which = 0: statm, giving resident pages * page_size; which = 1: oom_score) with one
 * open, one read and one close each, the GIL released for the whole loop. Returns
 * (values, failed, vanished, complete): values a list of (pid, value), failed a list of
 * (pid, errno) with errno 0 for a malformed file, vanished the count of processes gone
 * (ENOENT, ESRCH), complete 0 when CLOCK_MONOTONIC passed deadline_ns (checked every 64
 * PIDs after the first 64; deadline_ns < 0: none). Same contract as
 * pressured.kernel.procfs.skim_python, which is the reference and the fallback.
 *
 * which = 2 reads /proc/PID/stat instead and gives, per PID, the tuple (state, ppid, pgrp,
 * session, flags, minflt, majflt, starttime, rss pages) in place of one number: the same
 * tuple as pressured.kernel.procfs.parse_stat_line.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SKIM_MINIMUM 64

enum outcome { OK = 0, VANISHED = 1, FAILED = 2, MALFORMED = 3 };

#define STAT_WHICH 2
#define STAT_FIELDS 8 /* ppid pgrp session flags minflt majflt starttime rss */
#define STAT_BUF 2048 /* a stat line is at most ~1,100 bytes (52 numbers and a 64-byte comm) */

/* One parsed stat line: the numbers above and the state letter. */
struct stat_line {
    long long numbers[STAT_FIELDS];
    char state;
};

/*
 * Parse /proc/PID/stat: fields after the last ')' (comm may hold spaces and parentheses).
 * Field numbers (man 5 proc) of what is kept: 3 state, 4 ppid, 5 pgrp, 6 session, 9 flags,
 * 10 minflt, 12 majflt, 22 starttime, 24 rss.
 */
static int parse_stat_line(const char *buf, ssize_t len, struct stat_line *out) {
    static const int wanted[STAT_FIELDS] = {4, 5, 6, 9, 10, 12, 22, 24};
    const char *close = NULL;
    for (ssize_t i = len - 1; i >= 0; i--) {
        if (buf[i] == ')') { close = buf + i; break; }
    }
    if (close == NULL || close[1] != ' ' || close[2] == '\0') return 0;
    const char *p = close + 2;
    out->state = *p;
    while (*p && *p != ' ') p++;
    int next = 0;
    for (int field = 4; field <= 24 && next < STAT_FIELDS; field++) {
        while (*p == ' ') p++;
        if (*p != '-' && (*p < '0' || *p > '9')) return 0;
        char *end = NULL;
        errno = 0;
        long long value = strtoll(p, &end, 10);
        if (errno != 0 || end == p) return 0;
        if (*end != ' ' && *end != '\n' && *end != '\0') return 0;
        if (field == wanted[next]) out->numbers[next++] = value;
        p = end;
    }
    if (next != STAT_FIELDS) return 0;
    if (out->numbers[STAT_FIELDS - 1] < 0) out->numbers[STAT_FIELDS - 1] = 0;
    return 1;
}

/*
 * A tuple of numbers, strings and such untracked tuples, taken off the garbage collector's
 * lists at once (CPython does the same to such a tuple when it first survives a collection):
 * 10,000 of them per skim, and the two readings kept, otherwise fill the youngest generation
 * every 700 allocations and end up in the oldest, whose collections took 10 to 50 ms in the
 * middle of decisions at 10,000 processes.
 */
static PyObject *untracked(PyObject *tuple) {
    if (tuple != NULL && PyObject_GC_IsTracked(tuple)) PyObject_GC_UnTrack(tuple);
    return tuple;
}

static PyObject *stat_tuple(const struct stat_line *line) {
    const long long *n = line->numbers;
    return untracked(Py_BuildValue("(NLLLLLLLL)",
                                   PyUnicode_FromOrdinal((unsigned char)line->state), n[0], n[1],
                                   n[2], n[3], n[4], n[5], n[6], n[7]));
}

/* Parse the number at *p (leading spaces allowed); it must end at a space or the end. */
static int parse_number(const char **p, long long *out) {
    const char *start = *p;
    while (*start == ' ' || *start == '\t') start++;
    if (*start < '0' || *start > '9') return 0;
    char *end = NULL;
    errno = 0;
    long long value = strtoll(start, &end, 10);
    if (errno != 0 || end == start) return 0;
    if (*end != ' ' && *end != '\n' && *end != '\t' && *end != '\0') return 0;
    *out = value;
    *p = end;
    return 1;
}

static PyObject *skim(PyObject *self, PyObject *args) {
    const char *root;
    PyObject *pids_obj;
    int which;
    long long page_size, deadline_ns;
    if (!PyArg_ParseTuple(args, "sOiLL", &root, &pids_obj, &which, &page_size, &deadline_ns))
        return NULL;
    if (which < 0 || which > STAT_WHICH) {
        PyErr_SetString(PyExc_ValueError, "which must be 0 (statm), 1 (oom_score) or 2 (stat)");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(pids_obj, "pids must be a sequence");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    long *pids = PyMem_RawMalloc(sizeof(long) * (n ? n : 1));
    long long *values = PyMem_RawMalloc(sizeof(long long) * (n ? n : 1));
    int *outcomes = PyMem_RawMalloc(sizeof(int) * (n ? n : 1));
    int *errnos = PyMem_RawMalloc(sizeof(int) * (n ? n : 1));
    struct stat_line *lines =
        which == STAT_WHICH ? PyMem_RawMalloc(sizeof(struct stat_line) * (n ? n : 1)) : NULL;
    if (!pids || !values || !outcomes || !errnos || (which == STAT_WHICH && !lines)) {
        PyMem_RawFree(pids); PyMem_RawFree(values); PyMem_RawFree(outcomes); PyMem_RawFree(errnos);
        PyMem_RawFree(lines);
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        pids[i] = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (pids[i] == -1 && PyErr_Occurred()) {
            PyMem_RawFree(pids); PyMem_RawFree(values); PyMem_RawFree(outcomes); PyMem_RawFree(errnos);
            PyMem_RawFree(lines);
            Py_DECREF(seq);
            return NULL;
        }
    }
    Py_DECREF(seq);
    const char *name = which == 0 ? "statm" : which == 1 ? "oom_score" : "stat";
    Py_ssize_t done = 0;
    int complete = 1;

    Py_BEGIN_ALLOW_THREADS
    char path[4096];
    char buf[STAT_BUF + 1];
    size_t want = which == STAT_WHICH ? STAT_BUF : 128;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (deadline_ns >= 0 && i && i % SKIM_MINIMUM == 0) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            if ((long long)now.tv_sec * 1000000000LL + now.tv_nsec > deadline_ns) {
                complete = 0;
                break;
            }
        }
        done = i + 1;
        errnos[i] = 0;
        snprintf(path, sizeof path, "%s/%ld/%s", root, pids[i], name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            errnos[i] = errno;
            outcomes[i] = (errno == ENOENT || errno == ESRCH) ? VANISHED : FAILED;
            continue;
        }
        ssize_t got = read(fd, buf, want);
        int read_errno = errno;
        close(fd);
        if (got < 0) {
            errnos[i] = read_errno;
            outcomes[i] = (read_errno == ENOENT || read_errno == ESRCH) ? VANISHED : FAILED;
            continue;
        }
        buf[got] = '\0';
        if (which == STAT_WHICH) {
            outcomes[i] = parse_stat_line(buf, got, &lines[i]) ? OK : MALFORMED;
            continue;
        }
        const char *p = buf;
        long long number = 0;
        int ok = parse_number(&p, &number);
        if (ok && which == 0) ok = parse_number(&p, &number);  /* statm: the 2nd field */
        if (!ok) {
            outcomes[i] = MALFORMED;
            continue;
        }
        values[i] = which == 0 ? number * page_size : number;
        outcomes[i] = OK;
    }
    Py_END_ALLOW_THREADS

    PyObject *ok_list = PyList_New(0), *failed = PyList_New(0), *result = NULL;
    long vanished = 0;
    if (!ok_list || !failed) goto out;
    for (Py_ssize_t i = 0; i < done; i++) {
        PyObject *item = NULL;
        if (outcomes[i] == OK && which == STAT_WHICH) {
            item = untracked(Py_BuildValue("(lN)", pids[i], stat_tuple(&lines[i])));
            if (!item || PyList_Append(ok_list, item) < 0) { Py_XDECREF(item); goto out; }
        } else if (outcomes[i] == OK) {
            item = untracked(Py_BuildValue("(lL)", pids[i], values[i]));
            if (!item || PyList_Append(ok_list, item) < 0) { Py_XDECREF(item); goto out; }
        } else if (outcomes[i] == VANISHED) {
            vanished++;
            continue;
        } else {
            item = Py_BuildValue("(li)", pids[i], outcomes[i] == MALFORMED ? 0 : errnos[i]);
            if (!item || PyList_Append(failed, item) < 0) { Py_XDECREF(item); goto out; }
        }
        Py_DECREF(item);
    }
    result = Py_BuildValue("(OOli)", ok_list, failed, vanished, complete);
out:
    Py_XDECREF(ok_list);
    Py_XDECREF(failed);
    PyMem_RawFree(pids); PyMem_RawFree(values); PyMem_RawFree(outcomes); PyMem_RawFree(errnos);
    PyMem_RawFree(lines);
    return result;
}

/*
 * pread_many(fds, keys, which, page_size, deadline_ns) -> (values, failed, complete): the
 * same parse over fds kept open between scans (pread at offset 0 regenerates the file).
 * values a list of (key, value), failed a list of (key, errno) with errno 0 for malformed,
 * keys[i] (a PID) naming fds[i].
 */
static PyObject *pread_many(PyObject *self, PyObject *args) {
    PyObject *fds_obj, *keys;
    int which;
    long long page_size, deadline_ns;
    if (!PyArg_ParseTuple(args, "OOiLL", &fds_obj, &keys, &which, &page_size, &deadline_ns))
        return NULL;
    if (!PyList_Check(keys) || !PyList_Check(fds_obj) || PyList_GET_SIZE(keys) != PyList_GET_SIZE(fds_obj)) {
        PyErr_SetString(PyExc_TypeError, "fds and keys must be lists of one length");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(fds_obj, "fds must be a sequence");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int *fds = PyMem_RawMalloc(sizeof(int) * (n ? n : 1));
    long long *values = PyMem_RawMalloc(sizeof(long long) * (n ? n : 1));
    int *errnos = PyMem_RawMalloc(sizeof(int) * (n ? n : 1));
    struct stat_line *lines =
        which == STAT_WHICH ? PyMem_RawMalloc(sizeof(struct stat_line) * (n ? n : 1)) : NULL;
    if (!fds || !values || !errnos || (which == STAT_WHICH && !lines)) {
        PyMem_RawFree(fds); PyMem_RawFree(values); PyMem_RawFree(errnos); PyMem_RawFree(lines);
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        fds[i] = (int)PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (fds[i] == -1 && PyErr_Occurred()) {
            PyMem_RawFree(fds); PyMem_RawFree(values); PyMem_RawFree(errnos); PyMem_RawFree(lines);
            Py_DECREF(seq);
            return NULL;
        }
    }
    Py_DECREF(seq);
    Py_ssize_t done = 0;
    int complete = 1;
    Py_BEGIN_ALLOW_THREADS
    char buf[STAT_BUF + 1];
    size_t want = which == STAT_WHICH ? STAT_BUF : 128;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (deadline_ns >= 0 && i && i % SKIM_MINIMUM == 0) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            if ((long long)now.tv_sec * 1000000000LL + now.tv_nsec > deadline_ns) {
                complete = 0;
                break;
            }
        }
        done = i + 1;
        errnos[i] = 0;
        ssize_t got = pread(fds[i], buf, want, 0);
        if (got < 0) {
            errnos[i] = errno ? errno : EIO;
            continue;
        }
        buf[got] = '\0';
        if (which == STAT_WHICH) {
            if (!parse_stat_line(buf, got, &lines[i])) errnos[i] = -1;
            continue;
        }
        const char *p = buf;
        long long number = 0;
        int ok = parse_number(&p, &number);
        if (ok && which == 0) ok = parse_number(&p, &number);
        if (!ok) {
            errnos[i] = -1;
            continue;
        }
        values[i] = which == 0 ? number * page_size : number;
    }
    Py_END_ALLOW_THREADS
    PyObject *ok_list = PyList_New(0), *failed = PyList_New(0), *result = NULL;
    if (!ok_list || !failed) goto out;
    for (Py_ssize_t i = 0; i < done; i++) {
        PyObject *key = PyList_GET_ITEM(keys, i);
        PyObject *item = errnos[i] != 0 ? Py_BuildValue("(Oi)", key, errnos[i] < 0 ? 0 : errnos[i])
                         : which == STAT_WHICH ? untracked(Py_BuildValue("(ON)", key, stat_tuple(&lines[i])))
                                               : untracked(Py_BuildValue("(OL)", key, values[i]));
        if (!item || PyList_Append(errnos[i] == 0 ? ok_list : failed, item) < 0) {
            Py_XDECREF(item);
            goto out;
        }
        Py_DECREF(item);
    }
    result = Py_BuildValue("(OOi)", ok_list, failed, complete);
out:
    Py_XDECREF(ok_list);
    Py_XDECREF(failed);
    PyMem_RawFree(fds); PyMem_RawFree(values); PyMem_RawFree(errnos); PyMem_RawFree(lines);
    return result;
}

/*
 * family_bounds(lines, earlier, self_pid, group, page_size, interval_s, min_demand, swap,
 *               born_after)
 *   -> list of ((rule, demand, size, start, pid), [pid, ...]), highest first
 *
 * The native twin of pressured.scan.families.family_roots + family_bounds (the reference):
 * lines and earlier map PID -> stat tuple (as parse_stat_line gives; earlier may be None);
 * possible candidates (not a kernel thread, zombie, PID 1 or self_pid) join their parent's
 * family when both are candidates of one process group, or else their group leader's when
 * that is a candidate (group = 0: every process alone);
 * each family's bound is (1, demand, size) when interval_s > 0, a member was sampled and
 * demand >= min_demand, else (0, 0.0, size), with demand = max(faults, positive growth) *
 * page_size / interval_s and size = resident pages * page_size + members * swap; (start, pid)
 * is the largest (start time, PID) of its members: no root inside can rank after a tie later.
 * A member not in earlier (or with another start time) but started after born_after (clock
 * ticks; < 0: none) counts as sampled, with its faults since birth and no growth.
 */
#define PF_KTHREAD 0x00200000LL

struct member {
    long pid, ppid, pgid;
    long long start, rss, minflt, majflt;
    Py_ssize_t root;
    PyObject *key; /* the PID object of `lines` (borrowed: the dict outlives the call) */
};

struct family {
    int rule;
    double demand;
    long long size, start, pid;
    Py_ssize_t first, count; /* its members: order[first .. first + count) */
};

/* Descending by (rule, demand, size, start, pid): the order the scan reads families in. */
static int family_descending(const void *a, const void *b) {
    const struct family *x = a, *y = b;
    if (x->rule != y->rule) return x->rule < y->rule ? 1 : -1;
    if (x->demand != y->demand) return x->demand < y->demand ? 1 : -1;
    if (x->size != y->size) return x->size < y->size ? 1 : -1;
    if (x->start != y->start) return x->start < y->start ? 1 : -1;
    if (x->pid != y->pid) return x->pid < y->pid ? 1 : -1;
    return 0;
}

static Py_ssize_t find_index(const long *keys, const Py_ssize_t *slots, size_t mask, long pid) {
    size_t h = ((size_t)pid * 2654435761u) & mask;
    while (slots[h] >= 0) {
        if (keys[h] == pid) return slots[h];
        h = (h + 1) & mask;
    }
    return -1;
}

/* The member i belongs under: its parent in its process group, else its group's leader
 * (adopted, as pressured.scan.families.family_roots), else none (-1). */
static Py_ssize_t above(const struct member *members, const long *keys, const Py_ssize_t *slots,
                        size_t mask, Py_ssize_t i) {
    const struct member *m = &members[i];
    Py_ssize_t parent = find_index(keys, slots, mask, m->ppid);
    if (parent >= 0 && parent != i && members[parent].pgid == m->pgid) return parent;
    if (m->pgid != m->pid) {
        Py_ssize_t leader = find_index(keys, slots, mask, m->pgid);
        if (leader >= 0 && leader != i && members[leader].pgid == members[leader].pid)
            return leader;
    }
    return -1;
}

static int line_numbers(PyObject *line, long long out[9]) {
    /* (state, ppid, pgid, sid, flags, minflt, majflt, start, rss) -> out[1..8]; out[0] = 'Z' */
    if (!PyTuple_Check(line) || PyTuple_GET_SIZE(line) < 9) return 0;
    PyObject *state = PyTuple_GET_ITEM(line, 0);
    out[0] = PyUnicode_Check(state) && PyUnicode_GET_LENGTH(state) > 0
                 ? (long long)PyUnicode_READ_CHAR(state, 0) : 0;
    for (int i = 1; i < 9; i++) {
        out[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(line, i));
        if (out[i] == -1 && PyErr_Occurred()) return 0;
    }
    return 1;
}

static PyObject *family_bounds(PyObject *self, PyObject *args) {
    PyObject *lines, *earlier;
    long self_pid;
    int group;
    long long page_size, swap;
    double interval, min_demand;
    long long born_after;
    if (!PyArg_ParseTuple(args, "OOlpLddLL", &lines, &earlier, &self_pid, &group, &page_size,
                          &interval, &min_demand, &swap, &born_after))
        return NULL;
    if (!PyDict_Check(lines) || (earlier != Py_None && !PyDict_Check(earlier))) {
        PyErr_SetString(PyExc_TypeError, "lines and earlier must be dicts (earlier or None)");
        return NULL;
    }
    Py_ssize_t total = PyDict_GET_SIZE(lines);
    struct member *members = PyMem_Malloc(sizeof(struct member) * (total ? total : 1));
    size_t size = 16;
    while (size < (size_t)total * 2 + 16) size <<= 1;
    long *keys = PyMem_Malloc(sizeof(long) * size);
    Py_ssize_t *slots = PyMem_Malloc(sizeof(Py_ssize_t) * size);
    long long *sums = NULL; /* per root: faults, growth, rss, sampled, count, start, pid */
    Py_ssize_t *order = NULL, *first = NULL;
    struct family *families = NULL;
    PyObject *result = NULL;
    if (!members || !keys || !slots) { PyErr_NoMemory(); goto out; }
    for (size_t i = 0; i < size; i++) slots[i] = -1;
    size_t mask = size - 1;
    Py_ssize_t n = 0, pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(lines, &pos, &key, &value)) {
        long long f[9];
        long pid = PyLong_AsLong(key);
        if (pid == -1 && PyErr_Occurred()) goto out;
        if (!line_numbers(value, f)) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "malformed stat line");
            goto out;
        }
        if ((f[4] & PF_KTHREAD) || f[0] == 'Z' || pid == 1 || pid == self_pid) continue;
        struct member *m = &members[n];
        m->pid = pid; m->ppid = (long)f[1]; m->pgid = (long)f[2]; m->key = key;
        m->minflt = f[5]; m->majflt = f[6]; m->start = f[7]; m->rss = f[8];
        m->root = -1;
        size_t h = ((size_t)pid * 2654435761u) & mask;
        while (slots[h] >= 0) h = (h + 1) & mask;
        keys[h] = pid; slots[h] = n;
        n++;
    }
    /* Roots: follow the links up (parent in the process group, else the group's leader);
     * a walk longer than n is a cycle. */
    for (Py_ssize_t i = 0; i < n; i++) {
        if (members[i].root >= 0) continue;
        Py_ssize_t current = i, steps = 0;
        while (members[current].root < 0) {
            Py_ssize_t up = group ? above(members, keys, slots, mask, current) : -1;
            if (up < 0 || ++steps > n) {
                members[current].root = current;
                break;
            }
            current = up;
        }
        Py_ssize_t root = members[current].root;
        current = i;
        steps = 0;
        while (members[current].root < 0 && steps++ <= n) {
            members[current].root = root;
            Py_ssize_t up = above(members, keys, slots, mask, current);
            if (up < 0) break;
            current = up;
        }
    }
    sums = PyMem_Calloc((size_t)(n ? n : 1) * 7, sizeof(long long));
    first = PyMem_Malloc(sizeof(Py_ssize_t) * (n ? n : 1));
    order = PyMem_Malloc(sizeof(Py_ssize_t) * (n ? n : 1));
    if (!sums || !first || !order) { PyErr_NoMemory(); goto out; }
    for (Py_ssize_t i = 0; i < n; i++) {
        struct member *m = &members[i];
        long long *sum = &sums[m->root * 7];
        sum[2] += m->rss;
        sum[4] += 1;
        if (sum[4] == 1 || m->start > sum[5] || (m->start == sum[5] && m->pid > sum[6])) {
            sum[5] = m->start;
            sum[6] = m->pid;
        }
        if (earlier == Py_None) continue;
        PyObject *before = PyDict_GetItemWithError(earlier, m->key);
        if (before == NULL && PyErr_Occurred()) goto out;
        long long b[9];
        if (before != NULL && !line_numbers(before, b)) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "malformed stat line");
            goto out;
        }
        if (before == NULL || b[7] != m->start) {
            if (born_after >= 0 && m->start >= born_after) { /* born since: faults since birth */
                sum[3] += 1;
                sum[0] += m->minflt + m->majflt;
            }
            continue;
        }
        sum[3] += 1;
        sum[0] += (m->minflt > b[5] ? m->minflt - b[5] : 0) + (m->majflt > b[6] ? m->majflt - b[6] : 0);
        sum[1] += m->rss > b[8] ? m->rss - b[8] : 0;
    }
    /* Members grouped by root, in their order of appearance. */
    for (Py_ssize_t i = 0; i < n; i++) first[i] = 0;
    for (Py_ssize_t i = 0; i < n; i++) first[members[i].root]++;
    Py_ssize_t at = 0;
    for (Py_ssize_t i = 0; i < n; i++) { Py_ssize_t c = first[i]; first[i] = at; at += c; }
    for (Py_ssize_t i = 0; i < n; i++) order[first[members[i].root]++] = i;
    families = PyMem_Malloc(sizeof(struct family) * (n ? n : 1));
    if (!families) { PyErr_NoMemory(); goto out; }
    Py_ssize_t count_families = 0;
    for (Py_ssize_t k = 0; k < n;) {
        long long *sum = &sums[members[order[k]].root * 7];
        struct family *f = &families[count_families++];
        double faults = (double)(sum[0] * page_size) / (interval > 0 ? interval : 1.0);
        double growth = (double)(sum[1] * page_size) / (interval > 0 ? interval : 1.0);
        double demand = faults > growth ? faults : growth;
        f->rule = interval > 0 && sum[3] > 0 && demand >= min_demand;
        f->demand = f->rule ? demand : 0.0;
        f->size = sum[2] * page_size + sum[4] * swap;
        f->start = sum[5];
        f->pid = sum[6];
        f->first = k;
        f->count = (Py_ssize_t)sum[4];
        k += f->count;
    }
    qsort(families, (size_t)count_families, sizeof(struct family), family_descending);
    result = PyList_New(count_families);
    if (!result) goto out;
    for (Py_ssize_t i = 0; i < count_families; i++) {
        struct family *f = &families[i];
        PyObject *pids = PyList_New(f->count);
        if (!pids) { Py_CLEAR(result); goto out; }
        for (Py_ssize_t j = 0; j < f->count; j++) {
            PyObject *pid = members[order[f->first + j]].key;
            Py_INCREF(pid);
            PyList_SET_ITEM(pids, j, pid);
        }
        PyObject *item = Py_BuildValue("((idLLL)N)", f->rule, f->demand, f->size, f->start,
                                       f->pid, pids);
        if (!item) { Py_CLEAR(result); goto out; }
        PyList_SET_ITEM(result, i, item);
    }
out:
    PyMem_Free(members); PyMem_Free(keys); PyMem_Free(slots);
    PyMem_Free(sums); PyMem_Free(first); PyMem_Free(order); PyMem_Free(families);
    return result;
}

static PyMethodDef methods[] = {
    {"family_bounds", family_bounds, METH_VARARGS, "Stat families and their bounds."},
    {"skim", skim, METH_VARARGS, "Read one number per PID from statm or oom_score (or stat)."},
    {"pread_many", pread_many, METH_VARARGS, "The same numbers from fds kept open."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_skim", "Native skim loop (optional).", -1, methods,
};

PyMODINIT_FUNC PyInit__skim(void) { return PyModule_Create(&module); }
