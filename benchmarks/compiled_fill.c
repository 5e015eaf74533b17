/* An experiment, not part of the package: see compiled_fill.py.
 *
 * fill(numpy_state, python_state, key0, key1, unit, lane) writes what
 * GlobalRngs.reseed writes for python random and numpy's global RandomState, from
 * the same 627 words of the unit's Lane.GLOBALS stream, and returns word 2 (torch's
 * seed). The words are numpy's Philox4x64-10 with that key, counter (0, 0, unit,
 * lane): numpy adds one to the counter before each block of four words.
 *
 * numpy_state: numpy's mt19937_state (uint32 key[624], then int pos).
 * python_state: CPython's _random.Random struct from its int index (then state[624]).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MT_WORDS 624
#define MT_MSB 0x80000000u
#define STREAM_WORDS 627 /* [2] torch, [3:315] numpy, [315:627] python */
#define TORCH_AT 2
#define NUMPY_AT 3
#define PYTHON_AT 315

/* Philox4x64 with 10 rounds (Salmon et al., SC 2011). */
static void philox_block(const uint64_t ctr[4], uint64_t k0, uint64_t k1, uint64_t out[4]) {
    uint64_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    for (int round = 0; round < 10; round++) {
        if (round) {
            k0 += 0x9E3779B97F4A7C15ULL;
            k1 += 0xBB67AE8584CAA73BULL;
        }
        __uint128_t p0 = (__uint128_t)0xD2E7470EE14C6C93ULL * c0;
        __uint128_t p1 = (__uint128_t)0xCA5A826395121157ULL * c2;
        c0 = (uint64_t)(p1 >> 64) ^ c1 ^ k0;
        c1 = (uint64_t)p1;
        c2 = (uint64_t)(p0 >> 64) ^ c3 ^ k1;
        c3 = (uint64_t)p0;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

static void stream_words(uint64_t *words, int n, uint64_t k0, uint64_t k1, uint64_t unit,
                         uint64_t lane) {
    uint64_t ctr[4] = {0, 0, unit, lane}, block[4];
    for (int at = 0; at < n; at += 4) {
        ctr[0]++; /* never wraps: a stream here is 157 blocks */
        philox_block(ctr, k0, k1, block);
        for (int j = 0; j < 4 && at + j < n; j++) words[at + j] = block[j];
    }
}

/* The arguments as want unsigned 64-bit ints into v; 0 with a TypeError set if not. */
static int unsigned_args(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, uint64_t *v,
                         const char *usage) {
    if (nargs != want) {
        PyErr_SetString(PyExc_TypeError, usage);
        return 0;
    }
    for (Py_ssize_t i = 0; i < want; i++) v[i] = PyLong_AsUnsignedLongLong(args[i]);
    return !PyErr_Occurred();
}

static PyObject *fill(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    uint64_t v[6];
    if (!unsigned_args(args, nargs, 6, v, "fill(numpy_state, python_state, key0, key1, unit, lane)"))
        return NULL;
    uint64_t words[STREAM_WORDS + 1];
    stream_words(words, STREAM_WORDS, v[2], v[3], v[4], v[5]);
    uint32_t *numpy_state = (uint32_t *)(uintptr_t)v[0];
    memcpy(numpy_state, &words[NUMPY_AT], MT_WORDS * 4);
    numpy_state[0] = MT_MSB;
    numpy_state[MT_WORDS] = MT_WORDS;
    uint32_t *python_state = (uint32_t *)(uintptr_t)v[1];
    memcpy(python_state + 1, &words[PYTHON_AT], MT_WORDS * 4);
    python_state[0] = MT_WORDS;
    python_state[1] = MT_MSB;
    return PyLong_FromUnsignedLongLong(words[TORCH_AT]);
}

static PyObject *words(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    uint64_t v[5];
    if (!unsigned_args(args, nargs, 5, v, "words(n, key0, key1, unit, lane)")) return NULL;
    if (v[0] > 4096) {
        PyErr_SetString(PyExc_ValueError, "n: at most 4096 words");
        return NULL;
    }
    uint64_t out[4096];
    stream_words(out, (int)v[0], v[1], v[2], v[3], v[4]);
    return PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)(v[0] * 8));
}

static PyMethodDef methods[] = {
    {"fill", (PyCFunction)(void (*)(void))fill, METH_FASTCALL, "Reseed python and numpy."},
    {"words", (PyCFunction)(void (*)(void))words, METH_FASTCALL, "A stream's first words."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "compiled_fill", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit_compiled_fill(void) { return PyModule_Create(&module); }
