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
    if (which != 0 && which != 1) {
        PyErr_SetString(PyExc_ValueError, "which must be 0 (statm) or 1 (oom_score)");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(pids_obj, "pids must be a sequence");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    long *pids = PyMem_RawMalloc(sizeof(long) * (n ? n : 1));
    long long *values = PyMem_RawMalloc(sizeof(long long) * (n ? n : 1));
    int *outcomes = PyMem_RawMalloc(sizeof(int) * (n ? n : 1));
    int *errnos = PyMem_RawMalloc(sizeof(int) * (n ? n : 1));
    if (!pids || !values || !outcomes || !errnos) {
        PyMem_RawFree(pids); PyMem_RawFree(values); PyMem_RawFree(outcomes); PyMem_RawFree(errnos);
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        pids[i] = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (pids[i] == -1 && PyErr_Occurred()) {
            PyMem_RawFree(pids); PyMem_RawFree(values); PyMem_RawFree(outcomes); PyMem_RawFree(errnos);
            Py_DECREF(seq);
            return NULL;
        }
    }
    Py_DECREF(seq);
    const char *name = which == 0 ? "statm" : "oom_score";
    Py_ssize_t done = 0;
    int complete = 1;

    Py_BEGIN_ALLOW_THREADS
    char path[4096];
    char buf[129];
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
        ssize_t got = read(fd, buf, 128);
        int read_errno = errno;
        close(fd);
        if (got < 0) {
            errnos[i] = read_errno;
            outcomes[i] = (read_errno == ENOENT || read_errno == ESRCH) ? VANISHED : FAILED;
            continue;
        }
        buf[got] = '\0';
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
        if (outcomes[i] == OK) {
            item = Py_BuildValue("(lL)", pids[i], values[i]);
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
    if (!fds || !values || !errnos) {
        PyMem_RawFree(fds); PyMem_RawFree(values); PyMem_RawFree(errnos);
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        fds[i] = (int)PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (fds[i] == -1 && PyErr_Occurred()) {
            PyMem_RawFree(fds); PyMem_RawFree(values); PyMem_RawFree(errnos);
            Py_DECREF(seq);
            return NULL;
        }
    }
    Py_DECREF(seq);
    Py_ssize_t done = 0;
    int complete = 1;
    Py_BEGIN_ALLOW_THREADS
    char buf[129];
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
        ssize_t got = pread(fds[i], buf, 128, 0);
        if (got < 0) {
            errnos[i] = errno ? errno : EIO;
            continue;
        }
        buf[got] = '\0';
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
        PyObject *item = errnos[i] == 0 ? Py_BuildValue("(OL)", key, values[i])
                                        : Py_BuildValue("(Oi)", key, errnos[i] < 0 ? 0 : errnos[i]);
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
    PyMem_RawFree(fds); PyMem_RawFree(values); PyMem_RawFree(errnos);
    return result;
}

static PyMethodDef methods[] = {
    {"skim", skim, METH_VARARGS, "Read one number per PID from statm or oom_score."},
    {"pread_many", pread_many, METH_VARARGS, "The same numbers from fds kept open."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_skim", "Native skim loop (optional).", -1, methods,
};

PyMODINIT_FUNC PyInit__skim(void) { return PyModule_Create(&module); }
