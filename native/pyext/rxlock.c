/* rxlock.c — rxkernel.native._rxlock: the uncontended Mutex fast path as a Python type.
 *
 * Through cffi an uncontended acquire+release cost ~585 ns (two Python frames and two cffi calls),
 * 7.7x multiprocessing.Lock's. Here acquire() and release() are C methods: one CAS each when the
 * lock is free / held by this process with no flags, and only otherwise a call into the Python
 * subclass's _acquire_slow(*args, **kwargs) / _release_slow() (acquire with any arguments too, so
 * they are checked in one place), which speak the robust futex
 * protocol (rxkernel.client._sync.Mutex). The word: owner pid in bits 0-29, OWNER_DIED (30),
 * WAITERS (31); the fast paths only ever move it between 0 and exactly this process's pid, so any
 * flag sends the caller down the slow path, where the protocol lives in one place.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

static uint32_t current_pid;  /* getpid(), refreshed in a fork child */

static void refresh_pid(void) { current_pid = (uint32_t)getpid(); }

static PyObject *str_acquire_slow, *str_release_slow;

typedef struct {
    PyObject_HEAD
    uint32_t *word; /* NULL until _bind(): every call goes the slow way (which checks) */
} LockWord;

static PyObject *lockword_bind(LockWord *self, PyObject *arg) {
    unsigned long long addr = PyLong_AsUnsignedLongLong(arg);
    if (addr == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (addr & 3) {
        PyErr_SetString(PyExc_ValueError, "a lock word must be 4-byte aligned");
        return NULL;
    }
    self->word = (uint32_t *)(uintptr_t)addr;
    Py_RETURN_NONE;
}

static PyObject *call_slow(PyObject *self, PyObject *name, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    PyObject *method = PyObject_GetAttr(self, name);
    if (method == NULL)
        return NULL;
    PyObject *result = PyObject_Vectorcall(method, args, nargsf, kwnames);
    Py_DECREF(method);
    return result;
}

/* The word may not be mapped yet: the CAS then faults into rx's SIGSEGV trap, which pages it in
 * (or ends the process, like any wild access) and the instruction retries. */
static PyObject *lockword_acquire(LockWord *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    /* Only a bare acquire() (or `with`) is taken here: arguments go to the slow path, which
     * checks them (threading.Lock's ValueErrors) before trying the same CAS. */
    if (self->word != NULL && nargs == 0 && kwnames == NULL) {
        uint32_t expected = 0;
        if (__atomic_compare_exchange_n(self->word, &expected, current_pid, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            Py_RETURN_TRUE;
    }
    return call_slow((PyObject *)self, str_acquire_slow, args, (size_t)nargs, kwnames);
}

static PyObject *lockword_release(LockWord *self, PyObject *Py_UNUSED(ignored)) {
    if (self->word != NULL) {
        uint32_t expected = current_pid;
        if (__atomic_compare_exchange_n(self->word, &expected, 0, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
            Py_RETURN_NONE;
    }
    return call_slow((PyObject *)self, str_release_slow, NULL, 0, NULL);
}

static PyObject *lockword_enter(LockWord *self, PyObject *Py_UNUSED(ignored)) {
    return lockword_acquire(self, NULL, 0, NULL);
}

static PyObject *lockword_exit(LockWord *self, PyObject *const *Py_UNUSED(args), Py_ssize_t Py_UNUSED(nargs)) {
    return lockword_release(self, NULL);
}

static PyMethodDef lockword_methods[] = {
    {"_bind", (PyCFunction)lockword_bind, METH_O, "Point the fast paths at the lock word's address."},
    {"acquire", (PyCFunction)(void (*)(void))lockword_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1) -> bool: without arguments one CAS when free; else self._acquire_slow(...)."},
    {"release", (PyCFunction)lockword_release, METH_NOARGS,
     "release(): one CAS when held by this process with no flags set, else self._release_slow()."},
    {"__enter__", (PyCFunction)lockword_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))lockword_exit, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LockWordType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rxkernel.native._rxlock.LockWord",
    .tp_basicsize = sizeof(LockWord),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The fast paths of a robust lock word in shared memory; subclasses provide the slow ones.",
    .tp_new = PyType_GenericNew,
    .tp_methods = lockword_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rxlock", "The uncontended Mutex fast path (see rxlock.c).", -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__rxlock(void) {
    refresh_pid();
    if (pthread_atfork(NULL, NULL, refresh_pid) != 0)
        return PyErr_Format(PyExc_OSError, "pthread_atfork failed");
    str_acquire_slow = PyUnicode_InternFromString("_acquire_slow");
    str_release_slow = PyUnicode_InternFromString("_release_slow");
    if (str_acquire_slow == NULL || str_release_slow == NULL || PyType_Ready(&LockWordType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&LockWordType);
    if (PyModule_AddObject(m, "LockWord", (PyObject *)&LockWordType) < 0) {
        Py_DECREF(&LockWordType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
