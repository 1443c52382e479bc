/* Constant-fill box erasing on the CPU: write each box's pixels once, nothing else.
 *
 * The pure-torch path (erasing_apply.py) writes boxes through index_copy_, whose CPU loop loads
 * an index per element (~0.55 ns per element against ~0.1 ns for a plain store). This loop
 * stores a row of a box with a stride-1 loop the compiler vectorises, so the erase costs about
 * what writing the erased pixels once costs (benchmarks/erasing.py).
 *
 * Called from erasing_native.py, which validates the tensors first: addresses come from
 * tensors it holds (boxes: int64, contiguous, batch * k each), strides are in elements. The
 * boxes are checked against the image here, before any write. The GIL is released while
 * writing so DataLoader threads keep running. One thread: a pthread split was tried and lost
 * badly beside torch's OpenMP workers, which spin on the other cores after each parallel
 * region (erasing_native.py says when torch's path is used).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* The boxes of one call, as laid out by midefend's EraseBoxes: k boxes per sample, row-major. */
typedef struct {
    const int64_t *top, *left, *height, *width; /* batch * k each */
    const uint8_t *applied;                      /* batch: bool */
    int64_t batch, k;
} boxes_t;

/* The tensor: first element, per-dimension strides in elements, image size. */
typedef struct {
    char *data;
    int64_t channels, image_h, image_w, sb, sc, sh, sw;
} image_t;

#define DEFINE_FILL(NAME, T)                                                                      \
    static void NAME(const image_t *im, const boxes_t *bx, const char *fill) {                     \
        T *data = (T *)im->data;                                                                   \
        for (int64_t b = 0; b < bx->batch; ++b) {                                                  \
            if (!bx->applied[b]) continue;                                                         \
            for (int64_t j = 0; j < bx->k; ++j) {                                                  \
                const int64_t i = b * bx->k + j, h = bx->height[i], w = bx->width[i];              \
                T *origin = data + b * im->sb + bx->top[i] * im->sh + bx->left[i] * im->sw;        \
                for (int64_t c = 0; c < im->channels; ++c) {                                       \
                    T value;                                                                        \
                    memcpy(&value, fill + c * (int64_t)sizeof(T), sizeof(T));                      \
                    T *plane = origin + c * im->sc;                                                \
                    for (int64_t r = 0; r < h; ++r) {                                              \
                        T *row = plane + r * im->sh;                                               \
                        if (im->sw == 1) {                                                         \
                            for (int64_t q = 0; q < w; ++q) row[q] = value;                        \
                        } else {                                                                   \
                            for (int64_t q = 0; q < w; ++q) row[q * im->sw] = value;               \
                        }                                                                          \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }

DEFINE_FILL(fill_u8, uint8_t)
DEFINE_FILL(fill_u16, uint16_t)
DEFINE_FILL(fill_u32, uint32_t)
DEFINE_FILL(fill_u64, uint64_t)

typedef void (*fill_kernel)(const image_t *, const boxes_t *, const char *);

/* Index of the first applied box that is not inside the image, or -1. Checked before any write,
 * so a bad box leaves the tensor untouched (the differences avoid overflowing sums). */
static int64_t first_box_outside(const image_t *im, const boxes_t *bx) {
    for (int64_t b = 0; b < bx->batch; ++b) {
        if (!bx->applied[b]) continue;
        for (int64_t j = 0; j < bx->k; ++j) {
            const int64_t i = b * bx->k + j;
            const int64_t t = bx->top[i], l = bx->left[i], h = bx->height[i], w = bx->width[i];
            if (t < 0 || l < 0 || h < 0 || w < 0 || t > im->image_h || l > im->image_w ||
                h > im->image_h - t || w > im->image_w - l)
                return i;
        }
    }
    return -1;
}

#define N_ARGS 17

/* fill_boxes(data, itemsize, channels, image_h, image_w, sb, sc, sh, sw,
 *            top, left, height, width, applied, batch, k, fill)
 * data, top, left, height, width, applied, fill: addresses (int); the rest: int. Returns None;
 * ValueError (nothing written) if a box lies outside the image. */
static PyObject *fill_boxes(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != N_ARGS) {
        PyErr_Format(PyExc_TypeError, "fill_boxes takes %d arguments, got %zd", N_ARGS, nargs);
        return NULL;
    }
    int64_t v[N_ARGS];
    for (Py_ssize_t i = 0; i < N_ARGS; ++i) {
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
    const image_t im = {(char *)(intptr_t)v[0], v[2], v[3], v[4], v[5], v[6], v[7], v[8]};
    const boxes_t bx = {(const int64_t *)(intptr_t)v[9],  (const int64_t *)(intptr_t)v[10],
                        (const int64_t *)(intptr_t)v[11], (const int64_t *)(intptr_t)v[12],
                        (const uint8_t *)(intptr_t)v[13], v[14], v[15]};
    const char *fill = (const char *)(intptr_t)v[16];
    const int64_t bad = first_box_outside(&im, &bx);
    if (bad >= 0) {
        PyErr_Format(PyExc_ValueError, "fill_boxes: box %lld lies outside the %lldx%lld image",
                     (long long)bad, (long long)im.image_h, (long long)im.image_w);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    kernel(&im, &bx, fill);
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
    if (m != NULL && PyModule_AddIntConstant(m, "ABI_VERSION", 2) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
