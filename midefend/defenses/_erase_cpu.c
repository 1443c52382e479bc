/* Constant-fill box erasing on the CPU: write each box's pixels once, nothing else.
 *
 * The pure-torch path (erasing_apply.py) writes boxes through index_copy_, whose CPU loop loads
 * an index per element (~0.55 ns per element against ~0.1 ns for a plain store). This loop
 * stores a row of a box with a stride-1 loop the compiler vectorises, so the erase costs about
 * what writing the erased pixels once costs (benchmarks/erasing.py).
 *
 * Called from erasing_native.py, which validates everything first: addresses come from tensors
 * it holds, boxes lie inside the image (checked by the caller), strides and starts are in
 * elements. The GIL is released while writing so DataLoader threads keep running. One thread:
 * a pthread split was tried and lost badly beside torch's OpenMP workers, which spin on the
 * other cores after each parallel region (erasing_native.py says when torch's path is used).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define DEFINE_FILL(NAME, T)                                                                      \
    static void NAME(char *base, const int64_t *starts, const int64_t *heights,                    \
                     const int64_t *widths, int64_t n_boxes, int64_t channels, int64_t sc,         \
                     int64_t sh, int64_t sw, const char *fill) {                                   \
        T *data = (T *)base;                                                                        \
        for (int64_t b = 0; b < n_boxes; ++b) {                                                    \
            const int64_t h = heights[b], w = widths[b];                                           \
            for (int64_t c = 0; c < channels; ++c) {                                               \
                T value;                                                                            \
                memcpy(&value, fill + c * (int64_t)sizeof(T), sizeof(T));                          \
                T *plane = data + starts[b] + c * sc;                                              \
                for (int64_t r = 0; r < h; ++r) {                                                  \
                    T *row = plane + r * sh;                                                       \
                    if (sw == 1) {                                                                 \
                        for (int64_t j = 0; j < w; ++j) row[j] = value;                            \
                    } else {                                                                       \
                        for (int64_t j = 0; j < w; ++j) row[j * sw] = value;                       \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }

DEFINE_FILL(fill_u8, uint8_t)
DEFINE_FILL(fill_u16, uint16_t)
DEFINE_FILL(fill_u32, uint32_t)
DEFINE_FILL(fill_u64, uint64_t)

typedef void (*fill_kernel)(char *, const int64_t *, const int64_t *, const int64_t *, int64_t,
                            int64_t, int64_t, int64_t, int64_t, const char *);

/* fill_boxes(data, itemsize, starts, heights, widths, n_boxes, channels, sc, sh, sw, fill)
 * data, starts, heights, widths, fill: addresses (int); the rest: int. Returns None. */
static PyObject *fill_boxes(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 11) {
        PyErr_Format(PyExc_TypeError, "fill_boxes takes 11 arguments, got %zd", nargs);
        return NULL;
    }
    int64_t v[11];
    for (Py_ssize_t i = 0; i < 11; ++i) {
        v[i] = (int64_t)PyLong_AsLongLong(args[i]);
        if (v[i] == -1 && PyErr_Occurred()) return NULL;
    }
    fill_kernel kernel;
    switch (v[1]) {
        case 1: kernel = fill_u8; break;
        case 2: kernel = fill_u16; break;
        case 4: kernel = fill_u32; break;
        case 8: kernel = fill_u64; break;
        default:
            PyErr_Format(PyExc_ValueError, "fill_boxes: itemsize must be 1, 2, 4 or 8, got %lld",
                         (long long)v[1]);
            return NULL;
    }
    char *data = (char *)(intptr_t)v[0];
    const int64_t *starts = (const int64_t *)(intptr_t)v[2];
    const int64_t *heights = (const int64_t *)(intptr_t)v[3];
    const int64_t *widths = (const int64_t *)(intptr_t)v[4];
    const char *fill = (const char *)(intptr_t)v[10];
    Py_BEGIN_ALLOW_THREADS
    kernel(data, starts, heights, widths, v[5], v[6], v[7], v[8], v[9], fill);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"fill_boxes", (PyCFunction)(void (*)(void))fill_boxes, METH_FASTCALL,
     "Write a constant per channel into boxes of a strided tensor (addresses and element strides)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_erase_cpu",
                                    "Constant-fill box erasing on the CPU.", -1, methods};

/* ABI_VERSION: bumped whenever fill_boxes's arguments change (erasing_native.ABI_VERSION). */
PyMODINIT_FUNC PyInit__erase_cpu(void) {
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "ABI_VERSION", 1) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
