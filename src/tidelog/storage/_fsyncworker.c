/* An fsync thread that never takes the GIL (storage/fsync.py ``FsyncWorker``).

A Python flush thread takes the GIL to wake up and again after each fsync, and each time waits
for the event loop to let go of it: up to the interpreter's switch interval (5 ms) when the loop
is busy. This thread is C: the loop hands it a descriptor (``submit``, a mutex and a condition
variable), it fsyncs it (or, for a job over many files, syncs its whole filesystem: ``syncfs``)
and posts the outcome, then writes to an eventfd the loop watches (``fileno``), where ``reap``
collects the outcomes. Requests are served in order, one at a time.

Only for tests: a ``gate`` descriptor, if given, is read (one byte) before each fsync, so a test
can hold an fsync in progress and release it.
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 64 /* requests and outcomes in flight at once (the group commit has one) */

typedef struct {
    unsigned long long token;
    int fd;
    int whole; /* syncfs(fd): the filesystem fd is in, not only its file */
    int error;
    long long started_ns;
    long long ended_ns;
} Item;

typedef struct {
    PyObject_HEAD
    pthread_t thread;
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    Item requests[SLOTS];
    int request_head, request_count;
    Item outcomes[SLOTS];
    int outcome_head, outcome_count;
    int in_flight; /* submitted, outcome not reaped */
    int event_fd;
    int gate_fd;
    int stop;
    int started;
    pid_t owner; /* the process whose thread serves it: a forked child has the state, not the thread */
    long native_id;
} Worker;

/* Started, and in the process that started it. After fork(2) the child's copy has no thread behind
   it (and its mutex may have been held by that thread): it takes no job and closes without it. */
static int serving(Worker *w) {
    return w->started && w->owner == getpid();
}

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void *serve(void *arg) {
    Worker *w = (Worker *)arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* signals are the main thread's */
    pthread_mutex_lock(&w->mutex);
    w->native_id = (long)syscall(SYS_gettid);
    for (;;) {
        while (w->request_count == 0 && !w->stop)
            pthread_cond_wait(&w->cond, &w->mutex);
        if (w->request_count == 0)
            break; /* stopped, and nothing left to serve */
        Item item = w->requests[w->request_head];
        w->request_head = (w->request_head + 1) % SLOTS;
        w->request_count--;
        int gate = w->gate_fd;
        pthread_mutex_unlock(&w->mutex);
        if (gate >= 0) {
            char byte;
            while (read(gate, &byte, 1) < 0 && errno == EINTR) {
            }
        }
        item.started_ns = now_ns();
        int result;
        do {
            result = item.whole ? syncfs(item.fd) : fsync(item.fd);
        } while (result != 0 && errno == EINTR);
        item.error = result == 0 ? 0 : errno;
        item.ended_ns = now_ns();
        pthread_mutex_lock(&w->mutex);
        w->outcomes[(w->outcome_head + w->outcome_count) % SLOTS] = item;
        w->outcome_count++;
        pthread_mutex_unlock(&w->mutex);
        /* After the unlock: the loop, woken, finds the mutex free (``reap`` reads the eventfd
           before it takes the outcomes, so an outcome is never left behind a read). */
        uint64_t one = 1;
        while (write(w->event_fd, &one, sizeof one) < 0 && errno == EINTR) {
        }
        pthread_mutex_lock(&w->mutex);
    }
    pthread_mutex_unlock(&w->mutex);
    return NULL;
}

static int Worker_init(Worker *w, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"gate", NULL};
    int gate = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|i", keywords, &gate))
        return -1;
    if (w->started) {
        PyErr_SetString(PyExc_RuntimeError, "FsyncWorker already started");
        return -1;
    }
    w->gate_fd = gate;
    w->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->event_fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    pthread_mutex_init(&w->mutex, NULL);
    pthread_cond_init(&w->cond, NULL);
    int error = pthread_create(&w->thread, NULL, serve, w);
    if (error != 0) {
        close(w->event_fd);
        w->event_fd = -1;
        errno = error;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    w->owner = getpid();
    w->started = 1;
    return 0;
}

static PyObject *Worker_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    Worker *w = (Worker *)type->tp_alloc(type, 0);
    if (w != NULL) {
        w->event_fd = -1;
        w->gate_fd = -1;
    }
    return (PyObject *)w;
}

static void stop_thread(Worker *w) {
    if (!w->started)
        return;
    if (w->owner != getpid()) { /* a forked child's copy: no thread to stop, a mutex not to touch */
        w->started = 0;
        close(w->event_fd);
        w->event_fd = -1;
        return;
    }
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&w->mutex);
    w->stop = 1;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mutex);
    pthread_join(w->thread, NULL);
    Py_END_ALLOW_THREADS
    w->started = 0;
    pthread_mutex_destroy(&w->mutex);
    pthread_cond_destroy(&w->cond);
    close(w->event_fd);
    w->event_fd = -1;
}

static PyObject *Worker_close(Worker *w, PyObject *unused) {
    stop_thread(w);
    Py_RETURN_NONE;
}

static void Worker_dealloc(Worker *w) {
    stop_thread(w);
    Py_TYPE(w)->tp_free((PyObject *)w);
}

static PyObject *Worker_submit(Worker *w, PyObject *args) {
    unsigned long long token;
    int fd;
    int whole = 0;
    if (!PyArg_ParseTuple(args, "Ki|p", &token, &fd, &whole))
        return NULL;
    if (!serving(w)) {
        PyErr_SetString(PyExc_RuntimeError, w->started ? "FsyncWorker belongs to the process that forked this one"
                                                       : "FsyncWorker is closed");
        return NULL;
    }
    pthread_mutex_lock(&w->mutex);
    if (w->in_flight >= SLOTS) {
        pthread_mutex_unlock(&w->mutex);
        PyErr_SetString(PyExc_BufferError, "FsyncWorker: too many fsyncs in flight");
        return NULL;
    }
    Item *item = &w->requests[(w->request_head + w->request_count) % SLOTS];
    item->token = token;
    item->fd = fd;
    item->whole = whole;
    w->request_count++;
    w->in_flight++;
    pthread_mutex_unlock(&w->mutex);
    /* After the unlock, so the woken thread does not wake only to wait for the mutex the loop
       still holds (a switch there and back on a busy core). The thread checks the count under the
       mutex before it waits: no wake-up is lost. */
    pthread_cond_signal(&w->cond);
    Py_RETURN_NONE;
}

static PyObject *Worker_reap(Worker *w, PyObject *unused) {
    /* Every outcome posted so far: [(token, errno or 0, started ns, ended ns)], CLOCK_MONOTONIC
       (time.perf_counter_ns's clock on Linux). */
    Item taken[SLOTS];
    int count = 0;
    if (serving(w)) {
        uint64_t value;
        (void)!read(w->event_fd, &value, sizeof value); /* EAGAIN: nothing posted since */
        pthread_mutex_lock(&w->mutex);
        while (w->outcome_count > 0) {
            taken[count++] = w->outcomes[w->outcome_head];
            w->outcome_head = (w->outcome_head + 1) % SLOTS;
            w->outcome_count--;
            w->in_flight--;
        }
        pthread_mutex_unlock(&w->mutex);
    }
    PyObject *list = PyList_New(count);
    if (list == NULL)
        return NULL;
    for (int i = 0; i < count; i++) {
        PyObject *row = Py_BuildValue("(KiLL)", taken[i].token, taken[i].error, taken[i].started_ns, taken[i].ended_ns);
        if (row == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, row);
    }
    return list;
}

static PyObject *Worker_fileno(Worker *w, PyObject *unused) {
    if (!w->started) {
        PyErr_SetString(PyExc_ValueError, "FsyncWorker is closed");
        return NULL;
    }
    return PyLong_FromLong(w->event_fd);
}

static PyObject *Worker_native_id(Worker *w, void *closure) {
    return PyLong_FromLong(w->native_id);
}

static PyMethodDef Worker_methods[] = {
    {"submit", (PyCFunction)Worker_submit, METH_VARARGS, "submit(token, fd, syncfs=False): fsync fd (syncfs: sync the filesystem fd is in) in the worker thread"},
    {"reap", (PyCFunction)Worker_reap, METH_NOARGS, "reap() -> [(token, errno, started_ns, ended_ns)]"},
    {"fileno", (PyCFunction)Worker_fileno, METH_NOARGS, "the eventfd readable once an outcome is posted"},
    {"close", (PyCFunction)Worker_close, METH_NOARGS, "serve what was submitted, then stop the thread"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Worker_getset[] = {
    {"native_id", (getter)Worker_native_id, NULL, "the worker thread's id (0 until it ran)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject WorkerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tidelog.storage._fsyncworker.FsyncWorker",
    .tp_basicsize = sizeof(Worker),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An fsync thread that never takes the GIL.",
    .tp_new = Worker_new,
    .tp_init = (initproc)Worker_init,
    .tp_dealloc = (destructor)Worker_dealloc,
    .tp_methods = Worker_methods,
    .tp_getset = Worker_getset,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fsyncworker", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__fsyncworker(void) {
    if (PyType_Ready(&WorkerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "SYNCFS", 1) < 0) { /* submit takes syncfs jobs */
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&WorkerType);
    if (PyModule_AddObject(m, "FsyncWorker", (PyObject *)&WorkerType) < 0) {
        Py_DECREF(&WorkerType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
